"""HTML drift report: the verdict, a ranked feature table, and reference-vs-current plots.

Plots are drawn from the histograms/bucket shares that monitoring.drift already computed, so the
report never touches the raw data again; each is an inline base64 PNG (one self-contained file).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from mlops_pipeline.monitoring.results import (  # noqa: E402
    DriftVerdict,
    ExpectationFailure,
    FeatureDrift,
    ValidationResult,
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3}.drift{color:#b00020;font-weight:600}.ok{color:#1b5e20}
.muted{color:#777}.grid{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;border:1px solid #eee;padding:.5rem}figcaption{font-size:.9rem}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


def _describe_failure(failure: ExpectationFailure) -> str:
    """One readable line per failed expectation, e.g. 'color_intensity: ... (8.1 % unexpected)'."""
    text = f"<b>{_fmt(failure.column or 'table')}</b>: {_fmt(failure.expectation)}"
    if failure.unexpected_percent is not None:
        text += f" ({failure.unexpected_percent:.3g} % of values unexpected"
        if failure.partial_unexpected:
            examples = failure.partial_unexpected[:3]
            text += ", e.g. " + ", ".join(_fmt(_maybe_float(v)) for v in examples)
        text += ")"
    if failure.observed is not None:
        text += f"; observed {_fmt(failure.observed)}"
    if failure.error:
        text += f"; error: {_fmt(failure.error)}"
    return text


def _maybe_float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def plot_feature(feature: FeatureDrift) -> str | None:
    """A reference-vs-current plot of one feature as a base64 PNG, or None without data."""
    plot = feature.plot
    if plot is None:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
    if plot.type == "histogram":
        edges = plot.edges
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        for key, color in (("reference", "#1f77b4"), ("current", "#d62728")):
            ax.bar(
                edges[:-1],
                getattr(plot, key),
                width=widths,
                align="edge",
                alpha=0.45,
                color=color,
                label=key,
            )
        ax.set_ylabel("share of rows")
    else:
        labels = plot.categories
        positions = range(len(labels))
        ax.bar(
            [p - 0.2 for p in positions],
            plot.reference,
            width=0.4,
            label="reference",
            color="#1f77b4",
        )
        ax.bar(
            [p + 0.2 for p in positions],
            plot.current,
            width=0.4,
            label="current",
            color="#d62728",
        )
        ax.set_xticks(
            list(positions),
            [str(label)[:14] for label in labels],
            rotation=45,
            ha="right",
            fontsize=7,
        )
        ax.set_ylabel("share of rows")
    ax.set_title(feature.name, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _null_rates(feature: FeatureDrift) -> str:
    if feature.null_rate_current is None or feature.null_rate_reference is None:
        return "-"
    return f"{feature.null_rate_reference:.1%} &rarr; {feature.null_rate_current:.1%}"


def render_report(
    verdict: DriftVerdict | Mapping[str, Any],
    title: str,
    validation: ValidationResult | Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """The whole report as one HTML string.

    Args:
        verdict: the drift verdict, or its JSON form (e.g. a saved drift.json).
        title: the page title (escaped).
        validation: the window's validation result (or its JSON form), if any.
        context: extra facts shown as a two-column table (e.g. window, row counts).
    """
    verdict = DriftVerdict.coerce(verdict)
    drifted = verdict.drifted
    incompatible = verdict.incompatible
    headline = ""
    if verdict.drift:
        headline = (
            f'<p class="drift">Drift detected in {len(drifted)} column(s): '
            f"{html.escape(', '.join(drifted))}</p>"
        )
    elif not incompatible:
        headline = '<p class="ok">No drift detected.</p>'
    if incompatible:
        headline += (
            f'<p class="drift">Not comparable: {html.escape(", ".join(incompatible))} cannot '
            "be read as the kind the reference recorded.</p>"
        )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        headline,
    ]
    if context:
        rows = "".join(f"<tr><th>{_fmt(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in context.items())
        parts.append(f"<table>{rows}</table>")
    if validation is not None:
        validation = ValidationResult.coerce(validation)
        parts.append(
            f"<h2>Validation</h2><p>{validation.failed} of "
            f"{validation.evaluated} expectations failed (failure rate "
            f"{_fmt(validation.failure_rate)}); "
            f"{len(validation.quarantined)} capture file(s) quarantined.</p>"
        )
        if validation.data_docs:
            parts.append(f"<p><a href='{html.escape(validation.data_docs)}'>GX Data Docs</a></p>")
        issues = [
            *(_describe_failure(f) for f in validation.failures),
            *(f"quarantined {_fmt(q.file)}: {_fmt(q.reason)}" for q in validation.quarantined),
        ]
        if issues:
            items = "".join(f"<li>{issue}</li>" for issue in issues[:50])
            parts.append(f"<ul>{items}</ul>")
    ranked = sorted(verdict.features, key=lambda f: (not f.drifted, -f.severity))
    header = (
        "<tr><th>column</th><th>role</th><th>status</th><th>method</th><th>PSI</th>"
        "<th>distance</th><th>shift (sd)</th><th>null rate</th><th>p (corrected)</th>"
        "<th>n ref</th><th>n current</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{_fmt(f.name)}</td><td>{_fmt(f.role)}</td>"
        f"<td class='{'drift' if f.drifted else 'muted'}'>{_fmt(f.status)}</td>"
        f"<td>{_fmt(f.method)}</td><td>{_fmt(f.psi)}</td><td>{_fmt(f.distance)}</td>"
        f"<td>{_fmt(f.wasserstein_sd)}</td><td>{_null_rates(f)}</td>"
        f"<td>{_fmt(f.p_value)}</td><td>{f.n_reference}</td><td>{f.n_current}</td></tr>"
        for f in ranked
    )
    parts.append(
        f"<h2>Columns</h2><table>{header}{rows}</table><h2>Distributions</h2><div class='grid'>"
    )
    for feature in ranked:
        image = plot_feature(feature)
        if image is None:
            continue
        parts.append(
            f"<figure><img alt='{_fmt(feature.name)}' src='data:image/png;base64,{image}'>"
            f"<figcaption>{_fmt(feature.name)}: {_fmt(feature.status)}</figcaption></figure>"
        )
    parts.append("</div></body></html>")
    return "".join(parts)


def write_report(
    verdict: DriftVerdict | Mapping[str, Any],
    path: Path,
    title: str,
    validation: ValidationResult | Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Path:
    """Write the HTML report (`render_report`) to `path` (parents created) and return it.

    Raises OSError when the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(verdict, title, validation, context), encoding="utf-8")
    return path


def save_window_results(
    report_dir: Path,
    verdict: DriftVerdict | Mapping[str, Any],
    validation: ValidationResult | Mapping[str, Any],
    title: str,
    context: Mapping[str, Any],
) -> str:
    """Write drift.json, validation.json and report.html for one window into `report_dir`
    (created); returns the report's path. Raises OSError when a file cannot be written."""
    verdict = DriftVerdict.coerce(verdict)
    validation = ValidationResult.coerce(validation)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "drift.json").write_text(verdict.model_dump_json(indent=1))
    (report_dir / "validation.json").write_text(validation.model_dump_json(indent=1))
    return str(write_report(verdict, report_dir / "report.html", title, validation, context))
