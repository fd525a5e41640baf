"""Shared by the benchmark scripts: rewrite one `## heading` section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).with_name("BENCHMARKS.md")


def write_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the `## heading` section, leaving every other section as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    marker = f"## {heading}\n"
    section = f"{marker}\n{body.strip()}\n\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
