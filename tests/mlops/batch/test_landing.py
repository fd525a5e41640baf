"""A batch deployment's scheduled run over its landing folder (`batch.landing`): new and changed
files only, file by file, one model load, failed files recorded; the watermark is in the ledger."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from mlops_pipeline.batch import landing as landing_run
from mlops_pipeline.batch import watermark
from mlops_pipeline.tracking import connect

from tests.conftest import IRIS_COLUMNS


def score(deployment: str, model_uri: str, landing: Path, out: Path, **options):
    return landing_run.score_landing(deployment, model_uri, str(landing), str(out), **options)


def parts(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("part-*"))


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model URIs `score_landing` loads, in order (the real load still happens)."""
    loads: list[str] = []
    real = landing_run.load_runtime

    def counting(model_uri: str, chunk_rows: int):
        loads.append(model_uri)
        return real(model_uri, chunk_rows)

    monkeypatch.setattr(landing_run, "load_runtime", counting)
    return loads


def test_each_run_scores_only_new_files_and_loads_the_model_once(
    iris_model, landing, iris_features, tmp_path, model_loads
) -> None:
    out = tmp_path / "scored"
    iris_features.iloc[:20].to_parquet(landing / "c.parquet", index=False)
    first = score("nightly", iris_model["uri"], landing, out)
    assert (first.files_scored, first.rows_scored, first.files_failed) == (3, 170, 0)
    assert model_loads == ["models:/iris/1"]  # once for three files
    assert set(watermark.scored_files("nightly")) == {
        str(landing / name) for name in ("a.parquet", "b.csv", "c.parquet")
    }
    assert json.loads((out / "_SUCCESS").read_text())["rows_scored"] == 170

    quiet = score("nightly", iris_model["uri"], landing, out)
    assert (quiet.files_scored, quiet.files_skipped, quiet.rows_scored) == (0, 3, 0)
    assert model_loads == ["models:/iris/1"]  # nothing new: the model is not loaded at all

    iris_features.iloc[:7].to_parquet(landing / "d.parquet", index=False)
    third = score("nightly", iris_model["uri"], landing, out)
    assert (third.files_scored, third.rows_scored) == (1, 7)
    assert [Path(f.input).name for f in third.files if not f.skipped] == ["d.parquet"]

    # another deployment has a watermark of its own
    other = score("weekly", iris_model["uri"], landing, out / "w")
    assert other.files_scored == 4
    assert watermark.forget("nightly") == 4
    assert watermark.scored_files("nightly") == {}
    assert len(watermark.scored_files("weekly")) == 4


def test_a_changed_file_is_scored_again_by_the_version_served_now_and_replaces_its_part(
    iris_model, landing, iris_features, tmp_path
) -> None:
    """After `update`, unchanged files keep their predictions; a file rewritten since is new
    input: scored with the new version, its old part removed, no row twice in the folder."""
    from mlops_pipeline.registry import resolve_model_uri

    out = tmp_path / "scored"
    score("hourly", iris_model["uri"], landing, out)
    old_a = [p for p in parts(out) if "-a-" in p]
    client = connect()
    version = client.create_model_version("iris", client.get_model_version("iris", "1").source)
    try:
        new_uri = resolve_model_uri(f"models:/iris/{version.version}").uri
        frame = iris_features.assign(id=[f"r{i}" for i in range(len(iris_features))])
        frame.iloc[:30].to_parquet(landing / "a.parquet", index=False)  # rewritten: 30 rows
        stat = (landing / "a.parquet").stat()
        os.utime(landing / "a.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        later = score("hourly", new_uri, landing, out)
        assert (later.files_scored, later.files_skipped, later.rows_scored) == (1, 1, 30)
        assert later.files[0].model_version == str(version.version)
        entry = watermark.scored_files("hourly")[str(landing / "a.parquet")]
        assert (entry.model_version, entry.output) == (str(version.version), later.files[0].output)
        assert not any((out / p).exists() for p in old_a)  # the v1 part of the old content
        table = pd.read_parquet(out)
        assert len(table) == 30 + 50 and table["id"].is_unique  # no input row twice
        versions = table.groupby("model_version")["id"].count().to_dict()
        assert versions == {"1": 50, str(version.version): 30}  # b.csv kept its v1 predictions
        manifest = json.loads((out / "_SUCCESS").read_text())
        assert (manifest["files_count"], manifest["rows_scored"]) == (2, 80)
    finally:
        client.delete_model_version("iris", version.version)


def test_rows_an_older_ledger_recorded_keep_the_by_path_rule(
    iris_model, landing, tmp_path, model_loads
) -> None:
    """A watermark row from before content keys (identity NULL) still marks its file scored."""
    from mlops_pipeline.ledger import batch_files_table, engine

    out = tmp_path / "scored"
    score("legacy", iris_model["uri"], landing, out)
    with engine().begin() as conn:
        conn.execute(sa.update(batch_files_table).values(identity=None))
    (landing / "b.csv").write_text((landing / "b.csv").read_text())  # new time, same rows
    again = score("legacy", iris_model["uri"], landing, out)
    assert (again.files_scored, again.files_skipped) == (0, 2)
    assert model_loads == ["models:/iris/1"]


def test_an_interrupted_run_is_finished_without_scoring_twice(
    iris_model, landing, tmp_path
) -> None:
    """A part renamed into place whose watermark row was never written (the run died between)
    is recorded by the next run and not scored again."""
    out = tmp_path / "scored"
    score("resume", iris_model["uri"], landing, out)
    written = {p: (out / p).stat().st_mtime_ns for p in parts(out)}
    watermark.forget("resume")
    again = score("resume", iris_model["uri"], landing, out)
    assert (again.files_scored, again.files_skipped, again.rows_scored) == (0, 2, 0)
    assert {p: (out / p).stat().st_mtime_ns for p in parts(out)} == written
    assert set(watermark.scored_files("resume")) == {
        str(landing / "a.parquet"),
        str(landing / "b.csv"),
    }


def test_an_empty_or_missing_landing_folder_scores_nothing_and_is_not_an_error(
    iris_model, tmp_path, model_loads
) -> None:
    (tmp_path / "landing").mkdir()
    result = score("empty", iris_model["uri"], tmp_path / "landing", tmp_path / "out")
    assert (result.files_scored, result.rows_read) == (0, 0)
    assert (tmp_path / "out" / "_SUCCESS").exists()
    missing = score("empty", iris_model["uri"], tmp_path / "nowhere", tmp_path / "out")
    assert missing.files == [] and model_loads == []


def test_a_bad_file_is_recorded_and_skipped_until_it_changes_while_the_others_are_scored(
    iris_model, landing, iris_features, tmp_path, model_loads
) -> None:
    out = tmp_path / "scored"
    bad = landing / "aa-broken.csv"
    iris_features.drop(columns=["sepal_width"]).to_csv(bad, index=False)
    over = landing / "c.csv"  # 2 rejected rows: over a threshold of 1 for this file alone
    rows = iris_features.iloc[:10].astype(object)
    rows.loc[rows.index[:2], IRIS_COLUMNS[0]] = "abc"
    rows.to_csv(over, index=False)
    first = score("landing-zone", iris_model["uri"], landing, out, error_threshold=1)
    assert (first.files_scored, first.files_failed, first.rows_scored) == (2, 2, 150)
    errors = {Path(f.input).name: f.error for f in first.files if f.error}
    assert "'sepal_width'" in errors["aa-broken.csv"] and "rejected" in errors["c.csv"]
    assert set(watermark.scored_files("landing-zone")) == {
        str(landing / "a.parquet"),
        str(landing / "b.csv"),
    }
    failed = json.loads((out / "_FAILED").read_text())
    assert set(failed) == {str(bad), str(over)}
    assert failed[str(bad)]["identity"] and failed[str(bad)]["model_version"] == "1"
    manifest = json.loads((out / "_SUCCESS").read_text())  # BI reports still refresh
    assert manifest["this_run"]["files_failed"] == 2 and manifest["rows_scored"] == 150
    assert sorted(p.split("-")[2] for p in parts(out)) == ["a", "b"]

    unchanged = score("landing-zone", iris_model["uri"], landing, out, error_threshold=1)
    assert (unchanged.files_scored, unchanged.files_failed) == (0, 2)
    assert model_loads == ["models:/iris/1"]  # nothing to try: no load
    assert json.loads((out / "_FAILED").read_text()) == failed

    iris_features.iloc[:10].to_csv(over, index=False)  # fixed; the other one removed
    bad.unlink()
    fixed = score("landing-zone", iris_model["uri"], landing, out, error_threshold=1)
    assert (fixed.files_scored, fixed.files_failed, fixed.files_skipped) == (1, 0, 2)
    assert not (out / "_FAILED").exists()


def test_bad_options_are_refused_before_anything_is_read(iris_model, tmp_path) -> None:
    from mlops_pipeline.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="--chunk-rows must be at least 1, got 0"):
        score("opts", iris_model["uri"], tmp_path, tmp_path / "out", chunk_rows=0)
    assert not (tmp_path / "out").exists()
