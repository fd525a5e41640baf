"""The shared contract: one models:/ grammar, one capture layout, one naming of predictions."""

from __future__ import annotations

import datetime as dt
import socket

import pytest
from mlops_pipeline.serving.contract import (
    ModelURI,
    capture_file_path,
    capture_glob,
    file_written_at,
    free_port,
    is_prediction_column,
    parse_model_uri,
    partition_date,
    port_problem,
    prediction_column,
)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/iris/3", ModelURI("iris", version="3")),
        ("models:/iris/latest", ModelURI("iris", version="latest")),
        ("models:/iris@champion", ModelURI("iris", alias="champion")),
        ("models:/my model@previous-champion", ModelURI("my model", alias="previous-champion")),
    ],
)
def test_model_uris_parse_and_print_back(uri, parsed):
    assert parse_model_uri(uri) == parsed
    assert str(parsed) == uri


@pytest.mark.parametrize(
    "uri", ["models:/iris", "models:/iris/v3", "models:/iris@", "runs:/abc/model", "models:/a/1/2"]
)
def test_malformed_model_uris_say_what_is_expected(uri):
    with pytest.raises(ValueError, match="models:/NAME/VERSION"):
        parse_model_uri(uri)


def test_capture_paths_carry_partition_date_and_write_time():
    written = dt.datetime(2026, 3, 1, 23, 59, 58, 123456, tzinfo=dt.UTC)
    path = capture_file_path("iris", "2", dt.date(2026, 3, 1), written=written)
    assert path.startswith("model=iris/version=2/date=2026-03-01/part-20260301T235958123456Z-")
    assert partition_date(path) == "2026-03-01"
    assert file_written_at(path) == written
    assert file_written_at("model=a/version=1/date=2026-03-01/part-20260301T101010Z-x.parquet") == (
        dt.datetime(2026, 3, 1, 10, 10, 10, tzinfo=dt.UTC)
    )
    feedback = capture_file_path("iris", "2", dt.date(2026, 3, 1), feedback=True)
    assert feedback.startswith("feedback/model=iris/version=2/date=2026-03-01/part-")
    assert capture_glob("iris", "2") == "model=iris/version=2/date=*/part-*.parquet"


def test_prediction_columns_are_named_one_way():
    assert prediction_column() == "prediction"
    assert prediction_column("proba") == "prediction.proba"
    assert [
        is_prediction_column(c) for c in ["prediction", "prediction.0", "predictions", "x"]
    ] == [
        True,
        True,
        False,
        False,
    ]


def test_port_checks_name_the_reason_a_port_is_taken():
    port = free_port()
    assert port_problem(port) is None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert "in use" in port_problem(port).lower()
