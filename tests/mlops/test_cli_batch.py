"""`mlops score-batch` through typer's runner: counts in --json, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from mlops_pipeline.cli import app
from typer.testing import CliRunner

from tests.mlops.batch.conftest import (  # noqa: F401 - fixtures
    iris_model,
    iris_registry,
    landing,
)

runner = CliRunner()


def score(*args: str):
    return runner.invoke(app, ["score-batch", *args])


def test_json_prints_the_counts_and_the_manifest_agrees(
    iris_model,  # noqa: F811
    landing,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = score(
        "models:/iris/1", "--input", str(landing), "--output", str(out), "--format", "csv", "--json"
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["rows_read"], counts["rows_scored"], counts["rows_rejected"]) == (150, 150, 0)
    assert counts["files_scored"] == 2 and counts["model_version"] == "1"
    assert json.loads((out / "_SUCCESS").read_text())["rows_scored"] == 150
    frame = pd.concat(pd.read_csv(p) for p in sorted(out.glob("part-*.csv")))
    assert len(frame) == 150 and frame["model_name"].unique().tolist() == ["iris"]

    again = score(
        "models:/iris/1", "--input", str(landing), "--output", str(out), "--format", "csv"
    )
    assert again.exit_code == 0
    assert "Scored 0 rows" in again.stdout and "2 file(s) were already scored" in again.stdout


def test_id_columns_and_human_summary(
    iris_model,  # noqa: F811
    landing,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = score(
        "models:/iris/1", "--input", f"{landing}/*.parquet", "--output", str(out),
        "--id-column", "id", "--chunk-rows", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Scored 100 rows with models:/iris/1 (0 rejected) from 1 file(s)" in result.stdout
    frame = pd.read_parquet(next(out.glob("part-*.parquet")))
    assert list(frame.columns) == ["id", "prediction", "model_name", "model_version", "scored_at"]


def test_a_missing_column_exits_2_with_one_line_naming_file_and_column(
    iris_model,  # noqa: F811
    iris_features,
    tmp_path: Path,
) -> None:
    src = tmp_path / "no-petals.csv"
    iris_features.drop(columns=["petal_width"]).to_csv(src, index=False)
    result = score("models:/iris/1", "--input", str(src), "--output", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and "'petal_width'" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_exit_codes_for_unknown_input_unknown_model_and_too_many_rejects(
    iris_model,  # noqa: F811
    iris_features,
    tmp_path: Path,
) -> None:
    out = str(tmp_path / "out")
    missing = score("models:/iris/1", "--input", str(tmp_path / "nope"), "--output", out, "--json")
    assert missing.exit_code == 3
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
    assert "nope' does not exist" in missing.stderr

    src = tmp_path / "in.csv"
    iris_features.to_csv(src, index=False)
    unknown = score("models:/nosuch/1", "--input", str(src), "--output", out)
    assert unknown.exit_code == 3

    bad = iris_features.astype({"sepal_width": object})
    bad.loc[[1, 2], "sepal_width"] = "n/a"
    bad.to_csv(src, index=False)
    failed = score("models:/iris/1", "--input", str(src), "--output", out, "--error-threshold", "1")
    assert failed.exit_code == 8
    assert "2 rows were rejected, more than --error-threshold 1" in failed.stderr
    assert not Path(out, "_SUCCESS").exists()
    passed = score("models:/iris/1", "--input", str(src), "--output", out, "--error-threshold", "2")
    assert passed.exit_code == 0 and "(2 rejected)" in passed.stdout

    wrong = score("models:/iris/1", "--input", str(src), "--output", out, "--format", "xlsx")
    assert wrong.exit_code == 2 and "--format xlsx" in wrong.stderr


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler, systemd or Kubernetes stops a job


@pytest.mark.parametrize(
    ("stop", "code", "how"), [(_ctrl_c, 130, "interrupted"), (_sigterm, 143, "terminated")]
)
def test_ctrl_c_or_sigterm_exits_with_one_line_and_the_folder_is_as_it_says(
    iris_model,  # noqa: F811
    landing,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
    stop,
    code: int,
    how: str,
) -> None:
    from mlops_pipeline.batch import files

    out = tmp_path / "out"
    reports = []

    def interrupt_in_the_second_file(rows: int) -> None:
        reports.append(rows)
        if len(reports) == 5:  # a.parquet is 4 chunks of 32 rows: b.csv's first chunk
            stop()

    monkeypatch.setattr(files, "_report", interrupt_in_the_second_file)
    handler = signal.getsignal(signal.SIGTERM)
    stopped = score(
        "models:/iris/1", "--input", str(landing), "--output", str(out), "--chunk-rows", "32"
    )
    assert stopped.exit_code == code
    assert stopped.stderr.strip().splitlines() == [
        f"{how}: no _SUCCESS written; rerun to finish (files already scored are kept)."
    ]
    assert signal.getsignal(signal.SIGTERM) is handler  # the command put the handler back
    # as the line says: no manifest, the finished file's part, nothing half-written
    assert not (out / "_SUCCESS").exists()
    assert [p.name.split("-")[2] for p in out.glob("part-*")] == ["a"]
    assert not [p for p in out.rglob(".*")]

    reports.clear()
    reports.extend([0] * 10)  # past the fifth report: the rerun is not interrupted
    again = score("models:/iris/1", "--input", str(landing), "--output", str(out), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["files_skipped"] == 1
    assert json.loads((out / "_SUCCESS").read_text())["rows_scored"] == 150


def test_help_paragraphs_wrap_cleanly_at_80_and_120_columns() -> None:
    for width in (80, 120):
        result = runner.invoke(app, ["score-batch", "--help"], env={"COLUMNS": str(width)})
        assert result.exit_code == 0
        text = result.stdout
        assert "A rerun skips the input files" in " ".join(text.split())
        lines = [line.rstrip() for line in text.splitlines()]
        assert max(len(line) for line in lines) <= width
        # a paragraph's lines fill the width but for its last: no break after a few words
        intro = lines[: next(i for i, line in enumerate(lines) if line.startswith("╭"))]
        for line, after in zip(intro, intro[1:], strict=False):
            if line.strip() and after.strip():
                assert len(line) > width - 20, line
