"""score_batch against a real MLflow registry and real files: output, rejects, manifest, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlops_pipeline.batch import score_batch
from mlops_pipeline.errors import InvalidInputError, NotFoundError, ValidationFailedError

from tests.conftest import IRIS_COLUMNS
from tests.mlops.batch.conftest import expected_predictions


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def test_scores_every_file_with_predictions_model_and_time_then_writes_the_manifest(
    iris_model, landing, iris_features, tmp_path
) -> None:
    out = tmp_path / "scored"
    result = score_batch(iris_model["uri"], str(landing), str(out), chunk_rows=32)

    assert (result.rows_read, result.rows_scored, result.rows_rejected) == (150, 150, 0)
    assert (result.files_scored, result.files_skipped) == (2, 0)
    assert result.model_version == "1" and result.model_uri == "models:/iris/1"
    parts = sorted(out.glob("part-*.parquet"))
    assert [p.name.split("-")[:3] for p in parts] == [["part", "v1", "a"], ["part", "v1", "b"]]
    scored = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert list(scored.columns) == [
        *IRIS_COLUMNS,
        "id",
        "prediction",
        "model_name",
        "model_version",
        "scored_at",
    ]
    assert scored["id"].tolist() == [f"r{i}" for i in range(150)]
    assert scored["prediction"].tolist() == expected_predictions(iris_model, iris_features)
    assert set(scored["model_name"]) == {"iris"} and set(scored["model_version"]) == {"1"}
    assert scored["scored_at"].nunique() == 1 and str(scored["scored_at"].dt.tz) == "UTC"

    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["rows_scored"] == 150 and manifest["model_uri"] == "models:/iris/1"
    assert [Path(f["input"]).name for f in manifest["files"]] == ["a.parquet", "b.csv"]
    assert [f["rows_scored"] for f in manifest["files"]] == [100, 50]
    assert not [p for p in out.rglob(".*")], "no temporary file is left behind"


def test_rerun_skips_files_already_scored_for_this_version_and_scores_new_ones(
    iris_model, landing, iris_features, tmp_path
) -> None:
    out = tmp_path / "scored"
    score_batch(iris_model["uri"], str(landing), str(out))
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    iris_features.iloc[:10].to_parquet(landing / "c.parquet", index=False)

    again = score_batch(iris_model["uri"], str(landing), str(out))

    assert (again.files_scored, again.files_skipped, again.rows_scored) == (1, 2, 10)
    skipped = [f for f in again.files if f.skipped]
    assert [Path(f.input).name for f in skipped] == ["a.parquet", "b.csv"]
    assert [f.rows_scored for f in skipped] == [100, 50]  # read from the Parquet footers
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*") if p.name in first} == first
    assert len(list(out.glob("part-*"))) == 3
    # the manifest describes the folder (all 3 files, 160 rows); `this_run` the rerun alone
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert (manifest["files_count"], manifest["rows_scored"]) == (3, 160)
    assert sorted((Path(f["input"]).name, f["rows_scored"]) for f in manifest["files"]) == [
        ("a.parquet", 100),
        ("b.csv", 50),
        ("c.parquet", 10),
    ]
    assert {f["model_version"] for f in manifest["files"]} == {"1"}
    this_run = manifest["this_run"]
    assert (this_run["files_scored"], this_run["files_skipped"], this_run["rows_scored"]) == (
        1,
        2,
        10,
    )


def test_bad_rows_go_to_the_rejects_file_with_the_service_reason(
    iris_model, iris_features, tmp_path
) -> None:
    src = tmp_path / "in.csv"
    frame = iris_features.iloc[:20].astype({"petal_width": object}).assign(id=range(20))
    frame.loc[4, "petal_width"] = "wide"
    frame.to_csv(src, index=False)
    out = tmp_path / "scored"

    result = score_batch(
        iris_model["uri"], str(src), str(out), format="csv", error_threshold=1, chunk_rows=8
    )

    assert (result.rows_read, result.rows_scored, result.rows_rejected) == (20, 19, 1)
    scored = pd.read_csv(next(out.glob("part-*.csv")))
    assert scored["id"].tolist() == [i for i in range(20) if i != 4]
    rejects = pd.read_csv(next((out / "_rejects").glob("rejects-*.csv")))
    assert rejects["id"].tolist() == [4]
    assert rejects["_row"].tolist() == [4] and rejects["_column"].tolist() == ["petal_width"]
    assert rejects["_code"].tolist() == ["wrong_type"]
    assert rejects["_reason"][0] == (
        "Column 'petal_width' row 4: expected double, got a value that is not one ('wide')."
    )
    assert rejects["_source_file"][0] == str(src)


def test_more_rejects_than_the_threshold_fail_the_run_without_a_manifest(
    iris_model, iris_features, tmp_path
) -> None:
    src = tmp_path / "in.parquet"
    bad = iris_features.iloc[:30].astype({"petal_width": object})
    bad.loc[[3, 7, 9], "petal_width"] = ["x", "y", 0.2]
    bad["petal_width"] = bad["petal_width"].astype(str)  # a text column
    bad.loc[9, "petal_width"] = None
    # 29 text values and one null: the column is of the wrong type as a whole
    bad.to_parquet(src, index=False)
    out = tmp_path / "scored"
    with pytest.raises(InvalidInputError, match=r"column 'petal_width' is of the wrong type"):
        score_batch(iris_model["uri"], str(src), str(out))
    assert visible_files(out) == []

    csv = tmp_path / "in.csv"
    frame = iris_features.iloc[:30].astype({"petal_width": object})
    frame.loc[[3, 7], "petal_width"] = ["x", "y"]
    frame.to_csv(csv, index=False)
    with pytest.raises(ValidationFailedError) as caught:
        score_batch(iris_model["uri"], str(csv), str(out), error_threshold=1)
    assert caught.value.exit_code == 8
    assert "2 rows were rejected, more than --error-threshold 1" in str(caught.value)
    assert visible_files(out) == []  # no part, no _SUCCESS
    assert len(pq.read_table(next((out / "_rejects").glob("*.parquet")))) == 2


@pytest.mark.parametrize(
    ("write", "message", "column"),
    [
        (
            lambda p, f: f.drop(columns=["petal_length"]).to_parquet(p / "x.parquet"),
            "Column 'petal_length' (double) is required by the model signature",
            "petal_length",
        ),
        (
            lambda p, f: f.assign(sepal_width="wide").to_csv(p / "x.csv", index=False),
            "column 'sepal_width' is of the wrong type",
            "sepal_width",
        ),
        (lambda p, f: (p / "x.parquet").write_bytes(b"not parquet at all"), "cannot be read", None),
        (lambda p, f: (p / "x.csv").write_bytes(b""), "cannot be read as CSV", None),
        (lambda p, f: f.iloc[:0].to_csv(p / "x.csv", index=False), "has no rows", None),
        (lambda p, f: f.iloc[:0].to_parquet(p / "x.parquet"), "has no rows", None),
        (
            lambda p, f: (p / "x.csv").write_text(
                f.to_csv(index=False) + "1,2,3,4,5,6\n" + f.to_csv(index=False, header=False)
            ),
            "cannot be read as CSV: CSV parse error",
            None,
        ),
    ],
    ids=[
        "missing-column",
        "wrong-type",
        "unreadable",
        "empty-file",
        "header-only",
        "no-rows",
        "too-many-fields",
    ],
)
def test_bad_input_files_fail_with_one_message_naming_file_and_column(
    iris_model, iris_features, tmp_path, write, message, column
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    iris_features.to_parquet(src / "a-good.parquet")  # scored first: its part stays complete
    write(src, iris_features)
    bad = next(p for p in src.iterdir() if p.name.startswith("x."))
    out = tmp_path / "scored"
    with pytest.raises(InvalidInputError) as caught:
        score_batch(iris_model["uri"], str(src), str(out))
    text = str(caught.value)
    assert message in text and str(bad) in text and "\n" not in text
    assert caught.value.exit_code == 2
    if column:
        assert caught.value.details["column"] == column
    assert "_SUCCESS" not in visible_files(out)
    assert [p.name.split("-")[2] for p in out.glob("part-*")] == ["a"]
    assert not list(out.glob(".*"))


def test_unknown_input_path_is_not_found(iris_model, tmp_path) -> None:
    with pytest.raises(NotFoundError, match="does not exist") as caught:
        score_batch(iris_model["uri"], str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert caught.value.exit_code == 3
    assert not (tmp_path / "out").exists()


def test_id_columns_glob_and_fsspec_memory_uris(iris_model, iris_features) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for i in range(3):
        with fs.open(f"/land/day-{i}.parquet", "wb") as handle:
            iris_features.iloc[i * 50 : (i + 1) * 50].assign(
                key=range(i * 50, (i + 1) * 50)
            ).to_parquet(handle, index=False)
    with fs.open("/land/notes.txt", "wb") as handle:
        handle.write(b"ignored")

    result = score_batch(
        iris_model["uri"], "memory://land/day-[01].parquet", "memory://out", id_columns=["key"]
    )

    assert result.rows_scored == 100 and result.files_scored == 2
    assert [f.input for f in result.files] == [
        "memory:///land/day-0.parquet",
        "memory:///land/day-1.parquet",
    ]
    parts = sorted(fs.glob("/out/part-*.parquet"))
    with fs.open(parts[0], "rb") as handle:
        first = pd.read_parquet(handle)
    assert list(first.columns) == ["key", "prediction", "model_name", "model_version", "scored_at"]
    assert first["key"].tolist() == list(range(50))
    assert fs.exists("/out/_SUCCESS")


def test_captures_are_written_in_the_service_layout_and_read_by_the_monitor(
    iris_model, landing, iris_features, tmp_path
) -> None:
    from mlops_pipeline.monitoring.captures import list_capture_files, read_capture_files

    captures = tmp_path / "captures"
    score_batch(iris_model["uri"], str(landing), str(tmp_path / "out"), capture_uri=str(captures))

    files = list_capture_files(str(captures), "iris", "1")
    assert len(files) == 2 and all(f.startswith("model=iris/version=1/date=") for f in files)
    batch = read_capture_files(str(captures), files, dict.fromkeys(IRIS_COLUMNS, "numeric"))
    assert batch.quarantined == [] and len(batch.frame) == 150
    frame = batch.frame.sort_values(["_request_id", "_row"])
    assert frame["prediction"].tolist() == expected_predictions(iris_model, frame)
    assert set(frame["_status"]) == {200}
    assert frame.groupby("_request_id")["_row"].max().sort_values().tolist() == [49, 99]


def test_signature_columns_have_the_signature_types_whatever_the_input_format(
    iris_model, landing, tmp_path
) -> None:
    # a.parquet (float64, large_string ids), b.csv (read as text), c.parquet (a float32
    # column) into one folder: one schema
    frame = pd.read_parquet(landing / "a.parquet").iloc[:5]
    frame.astype({IRIS_COLUMNS[0]: "float32"}).to_parquet(landing / "c.parquet", index=False)
    out = tmp_path / "scored"
    score_batch(iris_model["uri"], str(landing), str(out))

    schemas = {p.name.split("-")[2]: pq.read_schema(p) for p in out.glob("part-*.parquet")}
    assert sorted(schemas) == ["a", "b", "c"]
    for schema in schemas.values():
        assert [str(schema.field(c).type) for c in IRIS_COLUMNS] == ["double"] * 4
    assert len({s.remove_metadata() for s in schemas.values()}) == 1


def test_a_file_changed_in_place_is_scored_again_and_replaces_its_part(
    iris_model, landing, iris_features, tmp_path
) -> None:
    out = tmp_path / "scored"
    score_batch(iris_model["uri"], str(landing), str(out), format="csv")
    a_part = next(out.glob("part-v1-a-*"))
    frame = iris_features.iloc[100:110].assign(id=[f"new{i}" for i in range(10)])
    frame.to_csv(landing / "b.csv", index=False)  # was 50 rows

    again = score_batch(iris_model["uri"], str(landing), str(out), format="csv")

    assert (again.files_scored, again.files_skipped, again.rows_scored) == (1, 1, 10)
    assert a_part.exists()
    (b_part,) = out.glob("part-v1-b-*")  # the old one is gone: no duplicate rows
    assert pd.read_csv(b_part)["id"].tolist() == [f"new{i}" for i in range(10)]
    assert len(list((out / "_parts").glob("*.json"))) == 2
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert (manifest["files_count"], manifest["rows_scored"]) == (2, 110)

    # a run stopped between renaming a part and writing its record: the record is rebuilt
    for record in (out / "_parts").glob("*.json"):
        record.unlink()
    third = score_batch(iris_model["uri"], str(landing), str(out), format="csv")
    assert (third.files_scored, third.files_skipped) == (0, 2)
    assert [f.rows_scored for f in third.files] == [100, 10]
    assert json.loads((out / "_SUCCESS").read_text())["rows_scored"] == 110


def test_another_version_or_format_replaces_each_file_s_parts_never_duplicates_rows(
    iris_model, landing, tmp_path
) -> None:
    """Scoring a folder again with another version (or format) leaves one part per input file:
    the new one. BI tools read every `part-` file, so two would count each row twice."""
    from mlops_pipeline.tracking import connect

    out = tmp_path / "scored"
    score_batch(iris_model["uri"], str(landing), str(out), format="csv")
    client = connect()
    version = client.create_model_version("iris", client.get_model_version("iris", "1").source)
    try:
        v2 = f"models:/iris/{version.version}"
        second = score_batch(v2, str(landing), str(out), format="csv")
        assert (second.files_scored, second.files_skipped) == (2, 0)
        parts = sorted(p.name for p in out.glob("part-*"))
        assert [p.split("-")[1:3] for p in parts] == [[f"v{version.version}", s] for s in "ab"]
        rows = pd.concat([pd.read_csv(out / p) for p in parts])
        assert len(rows) == 150 and rows["id"].is_unique
        assert set(rows["model_version"].astype(str)) == {str(version.version)}

        third = score_batch(v2, str(landing), str(out), format="parquet")
        assert third.files_scored == 2
        assert sorted(p.suffix for p in out.glob("part-*")) == [".parquet", ".parquet"]
        manifest = json.loads((out / "_SUCCESS").read_text())
        assert (manifest["files_count"], manifest["rows_scored"]) == (2, 150)
        assert len(list((out / "_parts").glob("*.json"))) == 2
    finally:
        client.delete_model_version("iris", version.version)


def test_an_output_folder_inside_the_input_folder_is_never_read_as_input(
    iris_model, landing, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths, as users type them
    first = score_batch(iris_model["uri"], "landing", "landing/scored")
    again = score_batch(iris_model["uri"], "landing", "landing/scored")
    assert (first.files_scored, again.files_scored, again.files_skipped) == (2, 0, 2)
    assert [Path(f.input).name for f in again.files] == ["a.parquet", "b.csv"]
    assert (landing / "scored" / "_SUCCESS").exists()
