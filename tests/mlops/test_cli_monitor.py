"""`mlops drift` and `mlops monitor` through typer's runner: JSON shape and exit codes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.cli import app
from typer.testing import CliRunner

from tests.conftest import IRIS_COLUMNS
from tests.mlops.monitoring.capture_support import capture_table, write_capture

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {"x": rng.normal(size=4000), "y": rng.normal(size=4000), "c": rng.choice(["a", "b"], 4000)}
    )
    same = pd.DataFrame(
        {"x": rng.normal(size=2000), "y": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000)}
    )
    shifted = same.assign(x=same["x"] + 0.5)
    paths = {
        "reference": tmp_path / "reference.parquet",
        "same": tmp_path / "same.csv",
        "shifted": tmp_path / "shifted.parquet",
        "other": tmp_path / "other.csv",
        "corrupt": tmp_path / "corrupt.parquet",
    }
    reference.to_parquet(paths["reference"])
    same.to_csv(paths["same"], index=False)
    shifted.to_parquet(paths["shifted"])
    pd.DataFrame({"z": [1, 2]}).to_csv(paths["other"], index=False)
    paths["corrupt"].write_bytes(b"definitely not parquet")
    return paths


def drift_json(reference: Path, current: Path, *extra: str) -> tuple[int, dict]:
    result = invoke(
        "drift", "--reference", str(reference), "--current", str(current), "--json", *extra
    )
    return result.exit_code, json.loads(result.stdout)


def test_drift_json_reports_each_column_and_exits_zero_either_way(files, tmp_path) -> None:
    code, quiet = drift_json(files["reference"], files["same"])
    assert code == 0
    assert quiet["drift"] is False
    assert [f["name"] for f in quiet["features"]] == ["x", "y", "c"]
    for feature in quiet["features"]:
        assert {"name", "drifted", "method", "score", "p_value"} <= set(feature)
        assert feature["drifted"] is False

    report = tmp_path / "out" / "drift.html"
    code, drifted = drift_json(files["reference"], files["shifted"], "--report", str(report))
    assert code == 0
    assert drifted["drift"] is True
    assert [f["name"] for f in drifted["features"] if f["drifted"]] == ["x"]
    x = drifted["features"][0]
    assert x["method"] == "ks+psi" and x["p_value"] < 0.01 and x["score"] > 0.1
    assert "data:image/png;base64," in report.read_text()
    assert drifted["report"] == str(report.resolve())


def test_drift_settings_from_cli_and_config_file(files, tmp_path) -> None:
    code, small = drift_json(files["reference"], files["shifted"], "--min-samples", "5000")
    assert code == 0 and small["drift"] is False
    assert {f["status"] for f in small["features"]} == {"insufficient_data"}

    config = tmp_path / "drift.json"
    config.write_text(json.dumps({"features": {"x": {"psi": 10, "distance": 1, "wasserstein": 5}}}))
    code, relaxed = drift_json(files["reference"], files["shifted"], "--config", str(config))
    assert code == 0 and relaxed["drift"] is False


def test_drift_errors_name_the_file_and_exit_non_zero(files, tmp_path) -> None:
    missing = invoke(
        "drift", "--reference", str(tmp_path / "nope.csv"), "--current", str(files["same"])
    )
    assert missing.exit_code == 3
    assert "nope.csv" in missing.output and "does not exist" in missing.output

    corrupt = invoke(
        "drift", "--reference", str(files["corrupt"]), "--current", str(files["same"]), "--json"
    )
    assert corrupt.exit_code == 2
    error = json.loads(corrupt.stdout)["error"]
    assert error["code"] == "invalid_input" and "corrupt.parquet" in error["message"]
    assert "Traceback" not in corrupt.output

    disjoint = invoke(
        "drift", "--reference", str(files["reference"]), "--current", str(files["other"])
    )
    assert disjoint.exit_code == 2
    assert "no columns in common" in disjoint.output

    bad_config = tmp_path / "bad.json"
    bad_config.write_text("{not json")
    result = invoke(
        "drift",
        "--reference",
        str(files["reference"]),
        "--current",
        str(files["same"]),
        "--config",
        str(bad_config),
    )
    assert result.exit_code == 2 and "bad.json" in result.output


def test_monitor_command_runs_the_flow_for_a_deployment(
    mlops_home, registered_model, iris_features, tmp_path
) -> None:
    capture = tmp_path / "capture"
    version = registered_model["version"]
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    frame = iris_features.assign(prediction=0)
    write_capture(
        capture, capture_table(frame, at, "r", version=version), at, model="iris", version=version
    )
    args = [
        "monitor",
        "iris-prod",
        "--capture-uri",
        str(capture),
        "--model-uri",
        f"models:/iris/{version}",
        "--min-samples",
        "100",
        "--json",
    ]

    first = invoke(*args)
    assert first.exit_code == 0, first.output
    result = json.loads(first.stdout)
    assert result["status"] in ("ok", "drift")
    assert {f["name"] for f in result["features"]} >= set(IRIS_COLUMNS)
    assert result["stats"]["rows_scored"] == 150
    assert Path(result["report"]).is_file()

    second = invoke(*args)
    assert second.exit_code == 0
    assert json.loads(second.stdout)["status"] == "no_new_data"

    unknown = invoke("monitor", "ghost", "--json")
    assert unknown.exit_code == 3
    assert "No deployment named 'ghost'" in json.loads(unknown.stdout)["error"]["message"]


def test_help_lists_the_options() -> None:
    for command, option in (("drift", "--reference"), ("monitor", "--since")):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and option in result.output


def test_drift_reads_column_kinds_from_the_reference_file(tmp_path) -> None:
    rng = np.random.default_rng(1)
    pd.DataFrame(
        {"rooms": rng.integers(1, 6, 3000), "segment": rng.choice(["A", "B"], 3000)}
    ).to_csv(tmp_path / "reference.csv", index=False)
    current = pd.DataFrame(
        {"rooms": rng.integers(1, 6, 2000).astype(float), "segment": rng.choice(["A", "B"], 2000)}
    )
    current.loc[3, "rooms"] = np.nan
    current.to_csv(tmp_path / "one-blank.csv", index=False)
    blanks = current.fillna({"rooms": 2.0}).astype({"segment": object})
    blanks.loc[rng.random(2000) < 0.9, "segment"] = None
    blanks.to_csv(tmp_path / "blanks.csv", index=False)

    code, quiet = drift_json(tmp_path / "reference.csv", tmp_path / "one-blank.csv")
    assert code == 0 and quiet["drift"] is False and quiet["status"] == "ok"
    rooms = quiet["features"][0]
    assert rooms["method"] == "chi2+psi" and rooms["unseen_share"] == 0.0 and rooms["psi"] < 0.02
    text = invoke(
        "drift",
        "--reference",
        str(tmp_path / "reference.csv"),
        "--current",
        str(tmp_path / "one-blank.csv"),
    )
    assert text.exit_code == 0 and "No drift." in text.output

    code, drifted = drift_json(tmp_path / "reference.csv", tmp_path / "blanks.csv")
    assert code == 0 and drifted["drifted"] == ["segment"]
    segment = drifted["features"][1]
    assert segment["method"] == "null_rate"
    assert segment["null_rate"]["reference"] == 0.0 and segment["null_rate"]["current"] > 0.85


def test_drift_says_when_a_column_cannot_be_compared(files, tmp_path) -> None:
    current = pd.read_csv(files["same"]).assign(x="not a number")
    current.to_csv(tmp_path / "text.csv", index=False)

    code, verdict = drift_json(files["reference"], tmp_path / "text.csv")
    text = invoke(
        "drift", "--reference", str(files["reference"]), "--current", str(tmp_path / "text.csv")
    )

    assert code == 0 and verdict["status"] == "incompatible" and verdict["incompatible"] == ["x"]
    assert "Not comparable" in text.output and "No drift." not in text.output
    assert "cannot be read as numeric" in text.output


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"alpha": "high"}, "'alpha' is 'high' (str), expected a number"),
        ({"thresholds": {"psi": "0.2"}}, "'thresholds.psi' is '0.2' (str), expected a number"),
        ({"features": ["x"]}, "'features' is ['x'] (list), expected an object"),
        ({"alhpa": 0.1}, "unknown setting(s) ['alhpa']"),
    ],
)
def test_drift_and_monitor_check_settings_with_their_types(
    files, tmp_path, settings, expected
) -> None:
    config = tmp_path / "drift.json"
    config.write_text(json.dumps(settings))

    drift = invoke(
        "drift",
        "--reference",
        str(files["reference"]),
        "--current",
        str(files["same"]),
        "--config",
        str(config),
    )
    monitor = invoke("monitor", "anything", "--config", str(config), "--json")

    for result in (drift, monitor):
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.output.split())
        assert "please report" not in result.output and "Traceback" not in result.output
    assert json.loads(monitor.stdout)["error"]["code"] == "invalid_input"
    assert len(drift.stderr.strip().splitlines()) == 1 and "drift.json" in drift.stderr


def test_drift_never_says_no_drift_when_nothing_could_be_tested(files, tmp_path) -> None:
    few = pd.read_csv(files["same"]).iloc[:40]
    few.to_csv(tmp_path / "few.csv", index=False)
    code, verdict = drift_json(files["reference"], tmp_path / "few.csv")
    assert code == 0 and verdict["status"] == "insufficient_data" and verdict["drift"] is False
    assert {f["status"] for f in verdict["features"]} == {"insufficient_data"}
    text = invoke(
        "drift", "--reference", str(files["reference"]), "--current", str(tmp_path / "few.csv")
    )
    assert "No drift." not in text.output
    assert "Not tested: no column has 500 non-null values on both sides yet" in text.output

    # one column short of data (mostly empty on both sides, at the same rate), the others
    # tested: "No drift" says what it did not test
    reference = pd.read_parquet(files["reference"])
    reference.assign(y=reference["y"].where(reference.index < 100)).to_parquet(
        tmp_path / "sparse.parquet"
    )
    same = pd.read_csv(files["same"])
    same.assign(y=same["y"].where(same.index < 50)).to_csv(tmp_path / "partly.csv", index=False)
    code, verdict = drift_json(tmp_path / "sparse.parquet", tmp_path / "partly.csv")
    assert verdict["status"] == "ok", verdict
    assert [f["status"] for f in verdict["features"]] == ["ok", "insufficient_data", "ok"]
    text = invoke(
        "drift",
        "--reference",
        str(tmp_path / "sparse.parquet"),
        "--current",
        str(tmp_path / "partly.csv"),
    )
    assert "No drift. (1 column(s) had too little data to test.)" in text.output
