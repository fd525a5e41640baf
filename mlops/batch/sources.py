"""Batch input: which files an input names, and each file as a stream of record batches.

An input is a CSV or Parquet file, a folder (searched recursively), or a glob, on a local path
or any fsspec URI (`s3://`, `abfs://`, `gs://`, `memory://`, ...). Each file is read as
record batches of about `chunk_rows` rows (`FileReader`), so memory stays bounded by the chunk
size, not the file size. Files and folders whose names
start with `_` or `.` (Spark's and our own `_SUCCESS`, `_rejects`, temporary parts) are skipped
in folders and in what a glob's pattern matches, as pyarrow and Spark skip them.

CSV columns the model signature names are read as text and typed by `checks` with the scoring
service's CSV rules (an empty cell is missing; `3.0` is the integer 3), so a bad cell rejects
one row instead of failing the file.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from mlops_pipeline.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")
_GLOB_CHARS = set("*?[")
PREFETCH = 2  # chunks decoded ahead of the one being scored


@dataclass(frozen=True)
class InputFile:
    """One input file: its filesystem, path on it, URI (for messages and manifests), format."""

    fs: fsspec.AbstractFileSystem
    path: str
    uri: str
    format: str  # "parquet" or "csv"

    def identity(self) -> str:
        """What changes when the file's content does: the store's checksum or ETag where it
        has one, else size and modification time (a file rewritten in place is new input)."""
        try:
            info = self.fs.info(self.path)
        except (OSError, ValueError):  # gone or unreadable: reading it reports why
            return ""
        parts = [str(info.get("size"))]
        for key in ("ETag", "etag", "md5Hash", "crc32c", "checksum", "generation", "version_id"):
            if info.get(key):
                parts.append(f"{key}={info[key]}")
                break
        for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
            if info.get(key) is not None:
                parts.append(f"{key}={info[key]}")
                break
        return ";".join(parts)

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


def list_input_files(source: str, exclude: str | None = None) -> list[InputFile]:
    """The CSV and Parquet files SOURCE names, sorted by path.

    Args:
        source: a file, a folder (searched recursively) or a glob, as a local path or fsspec
            URI; `_`/`.` names below the folder or matched by the glob's pattern are skipped.
        exclude: a folder whose files never count as input (the run's output folder, which may
            sit inside the input folder); a path or URI on the same filesystem as SOURCE.

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
        # the part the pattern matches follows the folder rule; a folder named outright counts
        root = path[: min(path.index(c) for c in _GLOB_CHARS & set(path))].rpartition("/")[0]
        root = root.rstrip("/") + "/" if root else ""
        paths = [
            p
            for p in fs.glob(path)
            if not _hidden(p[len(root) :] if p.startswith(root) else p.rsplit("/", 1)[-1])
            and fs.isfile(p)
        ]
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
    if exclude:
        with contextlib.suppress(ImportError, ValueError):
            skip = fsspec.core.url_to_fs(exclude)[1].rstrip("/") + "/"
            paths = [p for p in paths if not p.startswith(skip)]
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
    if not detail.endswith((".", "!", "?")):  # Arrow's messages often lack one; the hint follows
        detail += "."
    return InvalidInputError(
        f"Input file '{file.uri}' cannot be read as {file.format.upper()}: {detail}",
        hint="Fix or remove the file, then run again.",
        file=file.uri,
    )


class FileReader:
    """One input file as record batches of about `chunk_rows` rows; a context manager.

    Parquet is read with `pyarrow.parquet.ParquetFile.iter_batches` without pre-buffering and
    through a 1 MiB buffered stream: page by page, so memory stays near one chunk (the dataset
    scanner, which pre-buffers whole row groups ahead, held 2 GB for a 10M-row file). CSV is
    read by Arrow's streaming reader in 8 MiB blocks, joined into chunks of `chunk_rows`.
    Local files go through Arrow's own file system (reads in C++, off the GIL), others through
    their fsspec file system.

    Raises (on opening and while iterating):
        InvalidInputError: the file is empty or not valid CSV/Parquet, or turns out unreadable
            part-way, e.g. a CSV row with too many fields (exit 2).
    """

    def __init__(self, file: InputFile, text_columns: list[str], chunk_rows: int) -> None:
        self.file = file
        self.chunk_rows = chunk_rows
        local = isinstance(file.fs, LocalFileSystem)
        self._handle = None
        try:
            if file.format == "parquet":
                self._handle = None if local else file.fs.open(file.path, "rb")
                self._parquet = pq.ParquetFile(
                    file.path if local else self._handle, pre_buffer=False, buffer_size=1 << 20
                )
                self.names = list(self._parquet.schema_arrow.names)
            else:
                if local:
                    self._handle = pa.input_stream(file.path, compression="detect")
                else:
                    self._handle = file.fs.open(file.path, "rb", compression="infer")
                # only an empty cell is missing, as in the service's CSV reader ("NA" is text)
                convert = pacsv.ConvertOptions(
                    column_types=dict.fromkeys(text_columns, pa.string()),
                    null_values=[""],
                    strings_can_be_null=True,
                )
                self._csv = pacsv.open_csv(
                    self._handle,
                    read_options=pacsv.ReadOptions(block_size=8 << 20),
                    convert_options=convert,
                )
                self.names = list(self._csv.schema.names)
        except (pa.ArrowException, OSError, ValueError) as exc:
            self.close()
            raise _unreadable(file, exc) from exc

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _raw(self) -> Iterator[pa.RecordBatch]:
        if self.file.format == "parquet":
            raw = self._parquet.iter_batches(batch_size=self.chunk_rows)
        else:
            raw = iter(self._csv)
        return _prefetched(raw, PREFETCH)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """Batches of `chunk_rows` rows (the last, and Parquet ones at row-group ends, fewer)."""
        raw = self._raw()
        pending: list[pa.RecordBatch] = []
        rows = 0
        while True:
            try:
                batch = next(raw)
            except StopIteration:
                break
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise _unreadable(self.file, exc) from exc
            if self.file.format == "parquet":
                if batch.num_rows:
                    yield batch
                continue
            while batch.num_rows:  # CSV blocks: joined or cut into chunks of chunk_rows
                take = min(self.chunk_rows - rows, batch.num_rows)
                pending.append(batch.slice(0, take))
                rows += take
                batch = batch.slice(take)
                if rows == self.chunk_rows:
                    yield _join(pending)
                    pending, rows = [], 0
        if rows:
            yield _join(pending)


def _prefetched(batches: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """BATCHES read ahead by a background thread, at most DEPTH waiting: decoding the next
    chunk (Arrow, off the GIL) overlaps scoring this one. The reader's errors are raised
    here; leaving the loop early stops the thread."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ahead.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: object = done
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _join(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
