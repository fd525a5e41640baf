"""A batch deployment's runs score only new landing files; the watermark lives in the ledger."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlops_pipeline.batch import watermark
from mlops_pipeline.tracking import connect


def test_each_run_scores_only_files_the_deployment_has_not_scored(
    iris_model, landing, iris_features, tmp_path
) -> None:
    out = tmp_path / "scored"
    first = watermark.score_new_files("nightly", iris_model["uri"], str(landing), str(out))
    assert (first.files_scored, first.rows_scored) == (2, 150)
    assert watermark.scored_files("nightly") == {str(landing / "a.parquet"), str(landing / "b.csv")}

    quiet = watermark.score_new_files("nightly", iris_model["uri"], str(landing), str(out))
    assert (quiet.files_scored, quiet.files_skipped, quiet.rows_scored) == (0, 2, 0)

    iris_features.iloc[:7].to_parquet(landing / "c.parquet", index=False)
    third = watermark.score_new_files("nightly", iris_model["uri"], str(landing), str(out))
    assert (third.files_scored, third.rows_scored) == (1, 7)
    assert [Path(f.input).name for f in third.files if not f.skipped] == ["c.parquet"]

    # another deployment has a watermark of its own
    other = watermark.score_new_files("weekly", iris_model["uri"], str(landing), str(out / "w"))
    assert other.files_scored == 3
    assert watermark.forget("nightly") == 3
    assert watermark.scored_files("nightly") == set()
    assert len(watermark.scored_files("weekly")) == 3


def test_files_scored_by_an_earlier_version_stay_scored_after_an_update(
    iris_model, landing, tmp_path
) -> None:
    """`update` switches the version for later runs; files already scored are not redone."""
    from mlops_pipeline.registry import resolve_model_uri

    out = tmp_path / "scored"
    watermark.score_new_files("hourly", iris_model["uri"], str(landing), str(out))
    client = connect()
    source = client.get_model_version("iris", "1").source
    version = client.create_model_version("iris", source).version
    try:
        new_uri = resolve_model_uri(f"models:/iris/{version}").uri
        pd.read_parquet(landing / "a.parquet").iloc[:5].to_parquet(landing / "new.parquet")
        later = watermark.score_new_files("hourly", new_uri, str(landing), str(out))
        assert (later.files_scored, later.model_version) == (1, str(version))
        assert (
            pd.read_parquet(later.files[-1].output)["model_version"].tolist() == [str(version)] * 5
        )
    finally:
        client.delete_model_version("iris", version)


def test_an_empty_landing_folder_scores_nothing_and_is_not_an_error(iris_model, tmp_path) -> None:
    (tmp_path / "landing").mkdir()
    result = watermark.score_new_files(
        "empty", iris_model["uri"], str(tmp_path / "landing"), str(tmp_path / "out")
    )
    assert (result.files_scored, result.rows_read) == (0, 0)
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_a_bad_landing_file_does_not_hold_up_the_others(
    iris_model, landing, iris_features, tmp_path
) -> None:
    import pytest
    from mlops_pipeline.errors import InvalidInputError

    out = tmp_path / "scored"
    bad = landing / "aa-broken.csv"
    iris_features.drop(columns=["sepal_width"]).to_csv(bad, index=False)
    with pytest.raises(InvalidInputError) as caught:
        watermark.score_new_files("landing-zone", iris_model["uri"], str(landing), str(out))
    assert "1 of 3 input files could not be scored" in str(caught.value)
    assert str(bad) in str(caught.value) and "'sepal_width'" in str(caught.value)
    assert caught.value.details["files"] == [str(bad)]
    assert watermark.scored_files("landing-zone") == {
        str(landing / "a.parquet"),
        str(landing / "b.csv"),
    }
    assert not (out / "_SUCCESS").exists()
    assert sorted(p.name.split("-")[2] for p in out.glob("part-*")) == ["a", "b"]

    bad.unlink()  # fixed: the next run has nothing left to score and completes
    done = watermark.score_new_files("landing-zone", iris_model["uri"], str(landing), str(out))
    assert (done.files_scored, done.files_skipped, done.files_failed) == (0, 2, 0)
    assert (out / "_SUCCESS").exists()
