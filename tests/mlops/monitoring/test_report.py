"""The HTML drift report: verdict, ranked table and one embedded plot per tested column."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from mlops_pipeline.monitoring.drift import compare_frames
from mlops_pipeline.monitoring.report import render_report
from mlops_pipeline.tasks.monitoring import save_window_results


def test_report_embeds_a_png_per_tested_column_and_the_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "x": rng.normal(size=3000),
            "city": rng.choice(["a", "b"], 3000),
            "n": rng.normal(size=3000),
        }
    )
    current = pd.DataFrame(
        {
            "x": rng.normal(1.0, 1.0, 2000),
            "city": rng.choice(["a", "b", "c"], 2000),
            "n": rng.normal(size=2000),
        }
    )
    verdict = compare_frames(reference, current)
    validation = {
        "evaluated": 10,
        "failed": 1,
        "failure_rate": 0.1,
        "failures": [],
        "quarantined": [{"file": "part-1.parquet", "reason": "unreadable Parquet"}],
    }

    path = Path(
        save_window_results.fn(tmp_path / "out", verdict, validation, "Monitor <x>", {"rows": 2000})
    )

    assert json.loads((tmp_path / "out" / "drift.json").read_text())["drifted"] == ["city", "x"]
    assert json.loads((tmp_path / "out" / "validation.json").read_text())["failed"] == 1
    html = path.read_text()
    assert "Drift detected in 2 column(s)" in html
    assert "Monitor &lt;x&gt;" in html  # titles are escaped
    assert "part-1.parquet" in html
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 3
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    # drifted columns come first
    assert html.index("alt='x'") < html.index("alt='n'")


def test_validation_failures_read_as_sentences_not_dicts() -> None:
    from mlops_pipeline.monitoring.report import render_report

    verdict = compare_frames(
        pd.DataFrame({"x": np.arange(600.0)}), pd.DataFrame({"x": np.arange(600.0)})
    )
    failure = {
        "expectation": "expect_column_values_to_be_between",
        "column": "color_intensity",
        "observed": None,
        "unexpected_percent": 8.0666,
        "partial_unexpected": ["17.775020308446038", "22.3"],
        "error": None,
    }
    page = render_report(verdict, "t", {"failures": [failure], "quarantined": []})
    assert (
        "<b>color_intensity</b>: expect_column_values_to_be_between "
        "(8.07 % of values unexpected, e.g. 17.8, 22.3)" in page
    )
    assert "{'expectation'" not in page


def test_the_report_shows_shift_null_rates_and_incompatible_columns() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(size=2_000), "y": rng.normal(size=2_000)})
    current = pd.DataFrame({"x": ["text"] * 1_000, "y": rng.normal(0.5, 1.0, 1_000)})
    current.loc[:99, "y"] = np.nan

    page = render_report(compare_frames(reference, current), "t")

    assert "Not comparable: x cannot be read" in page and "No drift detected" not in page
    assert "Drift detected in 1 column(s): y" in page
    assert "<th>shift (sd)</th>" in page and "0.0% &rarr; 10.0%" in page
