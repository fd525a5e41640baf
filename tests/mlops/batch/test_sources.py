"""Which files an input names, their identity, and how unreadable files are reported."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from mlops_pipeline.batch.output import TableWriter
from mlops_pipeline.batch.sources import FileReader, list_input_files
from mlops_pipeline.errors import InvalidInputError


def names(source: str) -> list[str]:
    return [f.path.rsplit("/", 1)[-1] for f in list_input_files(source)]


def test_globs_skip_underscore_and_dot_names_as_folders_do(tmp_path: Path) -> None:
    for name in ("a.csv", "_skip.csv", ".hidden.csv", "b.parquet", "_rejects/r.csv", "sub/c.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n1\n")
    assert names(str(tmp_path)) == ["a.csv", "b.parquet", "c.csv"]
    assert names(f"{tmp_path}/*.csv") == ["a.csv"]
    assert names(f"{tmp_path}/**/*.csv") == ["a.csv", "c.csv"]
    # a folder the pattern does not match, named outright, is the user's choice
    assert names(f"{tmp_path}/_rejects/*.csv") == ["r.csv"]
    assert names(f"{tmp_path}/_skip.csv") == ["_skip.csv"]

    fs = fsspec.filesystem("memory")
    for name in ("a.csv", "_skip.csv", ".hidden.csv"):
        fs.pipe(f"/globbed/{name}", b"x\n1\n")
    assert [f.uri for f in list_input_files("memory://globbed/*.csv")] == [
        "memory:///globbed/a.csv"
    ]


def test_identity_changes_when_a_file_is_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    (file,) = list_input_files(str(path))
    before = file.identity()
    assert before and before == file.identity()
    path.write_text("x\n2\n")  # same size: the modification time tells
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file.identity() != before


def test_unreadable_csv_message_is_a_sentence_before_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    (file,) = list_input_files(str(path))
    with pytest.raises(InvalidInputError) as caught:
        FileReader(file, [], 10)
    assert "Empty CSV file. Fix or remove" in str(caught.value)


def test_csv_timestamps_are_iso_8601(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    writer = TableWriter(fs, str(tmp_path / "out.csv"), "csv")
    ts = pa.array([1796103428849695, None], pa.timestamp("us", tz="UTC"))
    naive = pa.array([1796103428000000, 0], pa.timestamp("us"))
    for _ in range(2):  # the second table is cast to the first one's schema
        writer.write(pa.table({"scored_at": ts, "t": naive}))
    writer.commit()
    rows = pacsv.read_csv(
        tmp_path / "out.csv", convert_options=pacsv.ConvertOptions(column_types={
            "scored_at": pa.string(), "t": pa.string()
        })
    ).to_pylist()  # fmt: skip
    assert rows[0] == {
        "scored_at": "2026-12-01T05:37:08.849695Z",
        "t": "2026-12-01T05:37:08.000000",
    }
    assert rows[2]["scored_at"] == "2026-12-01T05:37:08.849695Z"
