"""HTML report of a shadow or canary run: the decision, a figures table and a latency chart.

One self-contained file (the chart is an inline base64 PNG), like the drift report
(monitoring/report.py).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from mlops_pipeline.rollout.results import RolloutDecision  # noqa: E402

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20;font-weight:600}
"""


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def latency_chart(rows: list[tuple[str, float | None, float | None]]) -> str | None:
    """p50/p95 bars per (label, p50 ms, p95 ms) as a base64 PNG; None without any latency."""
    if not any(p50 is not None or p95 is not None for _, p50, p95 in rows):
        return None
    fig, ax = plt.subplots(figsize=(5, 2.8), dpi=90)
    positions = range(len(rows))
    ax.bar([p - 0.2 for p in positions], [r[1] or 0 for r in rows], 0.4, label="p50")
    ax.bar([p + 0.2 for p in positions], [r[2] or 0 for r in rows], 0.4, label="p95")
    ax.set_xticks(list(positions), [r[0] for r in rows], fontsize=8)
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def render_report(decision: RolloutDecision) -> str:
    """The report's HTML text."""
    d = decision
    ok = d.decision != "rolled_back"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{d.kind} "
        f"{html.escape(d.deployment)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{d.kind.title()} of {html.escape(d.model_name)} v{_fmt(d.challenger_version)} "
        f"on {html.escape(d.deployment)}</h1>",
        f"<p class='{'ok' if ok else 'bad'}'>{_fmt(d.decision)}</p>",
        f"<p>{_fmt(d.reason)}</p>",
        f"<p>champion v{_fmt(d.champion_version)}, challenger v{_fmt(d.challenger_version)}</p>",
    ]
    chart_rows: list[tuple[str, float | None, float | None]] = []
    if d.shadow is not None:
        s = d.shadow
        rows = [
            ("requests", s.champion_requests, s.challenger_requests),
            ("rows answered", s.champion_rows, s.challenger_rows),
            ("error rate", s.champion_error_rate, s.challenger_error_rate),
            ("p50 latency (ms)", s.champion_p50_ms, s.challenger_p50_ms),
            ("p95 latency (ms)", s.champion_p95_ms, s.challenger_p95_ms),
        ]
        if s.metric:
            rows.append(
                (f"{s.metric} on {s.labelled_rows} labelled rows",)
                + (
                    s.champion_metric,
                    s.challenger_metric,
                )
            )
        parts.append("<table><tr><th></th><th>champion</th><th>shadow</th></tr>")
        parts += [f"<tr><td>{k}</td><td>{_fmt(a)}</td><td>{_fmt(b)}</td></tr>" for k, a, b in rows]
        parts.append("</table>")
        parts.append(f"<p>{s.paired_rows} paired rows ({s.kind})")
        if s.agreement is not None:
            parts.append(f"; agreement {_fmt(s.agreement)}")
        if s.mean_abs_difference is not None:
            parts.append(
                f"; mean |difference| {_fmt(s.mean_abs_difference)}, max "
                f"{_fmt(s.max_abs_difference)}"
            )
        parts.append("</p>")
        if s.metric_problem:
            parts.append(
                f"<p class='bad'>metric not computed on {s.labelled_rows} labelled rows: "
                f"{html.escape(s.metric_problem)}</p>"
            )
        chart_rows = [
            ("champion", s.champion_p50_ms, s.champion_p95_ms),
            ("shadow", s.challenger_p50_ms, s.challenger_p95_ms),
        ]
    if d.steps:
        parts.append(
            "<table><tr><th>step</th><th>seconds</th><th>verdict</th><th>champion requests / "
            "errors / p95</th><th>challenger requests / errors / p95</th></tr>"
        )
        for step in d.steps:
            c, x = step.comparison.champion, step.comparison.challenger
            parts.append(
                f"<tr><td>{step.percent:g}%</td><td>{step.seconds:.0f}</td>"
                f"<td>{step.comparison.verdict}</td>"
                f"<td>{c.requests} / {c.failures} / {_fmt(c.p95_ms)}</td>"
                f"<td>{x.requests} / {x.failures} / {_fmt(x.p95_ms)}</td></tr>"
            )
            chart_rows.append((f"{step.percent:g}% champion", c.p50_ms, c.p95_ms))
            chart_rows.append((f"{step.percent:g}% challenger", x.p50_ms, x.p95_ms))
        parts.append("</table>")
    chart = latency_chart(chart_rows)
    if chart:
        parts.append(f"<img alt='latency' src='data:image/png;base64,{chart}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(decision: RolloutDecision, path: Path) -> Path:
    """Write `render_report` to `path` (parents created); OSError when it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(decision), encoding="utf-8")
    return path
