"""`mlops score-batch` through typer's runner: counts in --json, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
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
