"""Batch input: which files an input names, and each file as a stream of record batches.

An input is a CSV or Parquet file, a folder (searched recursively), or a glob, on a local path
or any fsspec URI (`s3://`, `abfs://`, `gs://`, `memory://`, ...). Each file is read with
`pyarrow.dataset` as record batches of at most `chunk_rows` rows with read-ahead of a few batches,
so memory stays bounded by the chunk size, not the file size. Files and folders whose names
start with `_` or `.` (Spark's and our own `_SUCCESS`, `_rejects`, temporary parts) are skipped
in folders, as pyarrow and Spark skip them.

CSV columns the model signature names are read as text and typed by `checks` with the scoring
service's CSV rules (an empty cell is missing; `3.0` is the integer 3), so a bad cell rejects
one row instead of failing the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem
from mlops_pipeline.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One input file: its filesystem, path on it, URI (for messages and manifests), format."""

    fs: fsspec.AbstractFileSystem
    path: str
    uri: str
    format: str  # "parquet" or "csv"

    @property
    def stem(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        for suffix in (*PARQUET_SUFFIXES, *CSV_SUFFIXES):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name


def file_format(path: str) -> str | None:
    """`parquet` or `csv` by the file name's suffix, else None."""
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def _hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def list_input_files(source: str) -> list[InputFile]:
    """The CSV and Parquet files SOURCE names, sorted by path.

    Args:
        source: a file, a folder (searched recursively; `_`/`.` names skipped) or a glob, as a
            local path or fsspec URI.

    Raises:
        NotFoundError: nothing exists at SOURCE, or it holds no CSV or Parquet file (exit 3).
        InvalidInputError: SOURCE is one file that is neither CSV nor Parquet, or its
            filesystem cannot be opened (exit 2).
    """
    try:
        fs, path = fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as exc:
        raise InvalidInputError(
            f"Input '{source}' cannot be opened: {exc}.",
            hint="Pass a local path or an fsspec URI whose filesystem is installed.",
            field="input",
            value=source,
        ) from exc
    path = path.rstrip("/") or path
    if _GLOB_CHARS & set(path):
        paths = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        root = path.rstrip("/") + "/"
        paths = [p for p in fs.find(path) if not _hidden(p[len(root) :])]
    elif fs.isfile(path):
        if file_format(path) is None:
            raise InvalidInputError(
                f"Input file '{source}' is neither CSV nor Parquet.",
                hint=f"Name it *.csv or *.parquet ({', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}).",
                field="input",
                value=source,
            )
        paths = [path]
    else:
        raise NotFoundError(
            f"Input '{source}' does not exist.",
            hint="Pass an existing file, folder or glob (local path or fsspec URI).",
            field="input",
            value=source,
        )
    files = [
        InputFile(fs, p, fs.unstrip_protocol(p) if "://" in source else p, fmt)
        for p in sorted(paths)
        if (fmt := file_format(p)) is not None
    ]
    if not files:
        raise NotFoundError(
            f"Input '{source}' holds no CSV or Parquet files.",
            hint=f"Files must end in {', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}.",
            field="input",
            value=source,
        )
    return files


def _unreadable(file: InputFile, exc: Exception) -> InvalidInputError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InvalidInputError(
        f"Input file '{file.uri}' cannot be read as {file.format.upper()}: {detail}",
        hint="Fix or remove the file, then run again.",
        file=file.uri,
    )


def open_dataset(file: InputFile, text_columns: list[str]) -> ds.Dataset:
    """FILE as a pyarrow dataset; CSV columns in `text_columns` are read as text.

    Raises:
        InvalidInputError: the file is empty or not valid CSV/Parquet (exit 2).
    """
    if file.format == "csv":
        # only an empty cell is missing, as in the service's CSV reader ("NA" is text)
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(text_columns, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
        )
        fmt: ds.FileFormat = ds.CsvFileFormat(convert_options=convert)
    else:
        fmt = ds.ParquetFileFormat()
    # local files through Arrow's own filesystem: reads stay in C++, off the GIL
    native = isinstance(file.fs, LocalFileSystem)
    try:
        return ds.dataset(
            file.path, filesystem=pafs.LocalFileSystem() if native else file.fs, format=fmt
        )
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(file, exc) from exc


def iter_batches(
    file: InputFile, dataset: ds.Dataset, chunk_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """FILE's rows as record batches of at most `chunk_rows` rows (empty batches dropped).

    Raises:
        InvalidInputError: the file turns out unreadable part-way, e.g. a CSV row with too many
            fields or a value that does not fit a column's type (exit 2).
    """
    scanner = dataset.scanner(
        columns=columns, batch_size=chunk_rows, batch_readahead=4, fragment_readahead=1
    )
    batches = scanner.to_batches()
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _unreadable(file, exc) from exc
        if batch.num_rows:
            yield batch
