"""Batch output: parts written under temporary names then renamed, rejects, the manifest.

Layout of an output folder (local path or fsspec URI)::

    part-v<version>-<input stem>-<key>-<id>.parquet|csv   scored rows of one input file
    _rejects/rejects-v<version>-<input stem>-<key>-<id>.…   its rejected rows and why
    _parts/part-v<version>-<input stem>-<key>-<id>.….json   what scored it (a `FileResult`)
    _SUCCESS                                              JSON manifest, written last

`<key>` is a hash of the input file's URI and the model version, `<id>` one of the file's
identity (size and modification time, or the store's checksum), so a rerun finds the parts it
already wrote and skips their inputs, and scores a file changed in place again, replacing its
old part. The manifest describes the whole folder (every part with a record), not one run.
A part appears only by renaming a finished `.…tmp` file (hidden: BI tools, pyarrow and Spark
skip `.` and `_` names), and `_SUCCESS` is removed when a run starts and written when it ends,
so a crashed or failed run never looks complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from mlops_pipeline.batch.results import BatchResult, FileResult, Format, Manifest
from mlops_pipeline.errors import BackendError, InvalidInputError
from pydantic import ValidationError

logger = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
REJECTS_DIR = "_rejects"
RECORDS_DIR = "_parts"
# part-<base>[-<identity>].<ext>; parts written before identities had none
_PART = re.compile(
    r"^part-v(?P<version>[^-]+)-(?P<stem>.+)-(?P<key>[0-9a-f]{12})"
    r"(?:-[0-9a-f]{8})?\.(?:parquet|csv)$"
)


def _input_key(input_uri: str, model_version: str) -> str:
    """The part-name key of one input file scored by one model version."""
    return hashlib.sha256(f"{input_uri}\n{model_version}".encode()).hexdigest()[:12]


def _iso_timestamps(table: pa.Table) -> pa.Table:
    """Timestamp columns as ISO 8601 text (`2026-12-01T05:37:08.849695Z`): Arrow's CSV writer
    puts a space between date and time, which strict ISO readers refuse."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            fmt = "%Y-%m-%dT%H:%M:%SZ" if f.type.tz else "%Y-%m-%dT%H:%M:%S"
            column = table.column(i)
            if f.type.tz:
                column = pc.cast(column, pa.timestamp(f.type.unit, "UTC"))
            table = table.set_column(i, f.name, pc.strftime(column, format=fmt))
    return table


def _filesystem(uri: str, option: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise InvalidInputError(
            f"{option} '{uri}' cannot be opened: {exc}.",
            hint="Pass a local path or an fsspec URI whose filesystem is installed.",
            field=option.lstrip("-"),
            value=uri,
        ) from exc
    return fs, root.rstrip("/") or root


class TableWriter:
    """Streams tables into one file at a hidden temporary name; `commit` renames it into place.

    The file is opened with the first table's schema; later tables are cast to it. `abort`
    removes the temporary file (also when nothing was written).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, fmt: Format) -> None:
        # one background thread writes (Arrow encodes and compresses off the GIL) while the
        # caller reads and scores the next chunk; at most one table waits, so memory stays
        # bounded by two chunks
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
        self._pending: Future | None = None
        self.fs = fs
        self.path = path
        parent, _, name = path.rpartition("/")
        self.tmp = f"{parent}/.{name}.tmp"
        self.format = fmt
        self.rows = 0
        self._handle: IO[bytes] | None = None
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Queue TABLE for writing; raises what the previous write raised."""
        self._wait()
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self.format == "csv":
            table = _iso_timestamps(table)
        if self._writer is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self.rows += table.num_rows
        self._pending = self._pool.submit(self._writer.write_table, table)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _open(self, schema: pa.Schema) -> None:
        self.fs.makedirs(self.path.rpartition("/")[0], exist_ok=True)
        self._schema = schema
        if isinstance(self.fs, LocalFileSystem):  # Arrow's own file: writes stay in C++
            self._handle = pa.OSFile(self.tmp, "wb")
        else:
            self._handle = self.fs.open(self.tmp, "wb")
        if self.format == "parquet":
            # dictionaries pay off for text (ids, categories, the model name); tried on every
            # float column they make writing ~6x slower for nothing
            text = [
                f.name
                for f in schema
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ]
            self._writer = pq.ParquetWriter(self._handle, schema, use_dictionary=text)
        else:
            self._writer = pacsv.CSVWriter(self._handle, schema)

    def _close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def commit(self) -> str | None:
        """Close and rename into place; returns the final path (None if nothing was written)."""
        self._close()
        if self._schema is None:
            return None
        self.fs.mv(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        with contextlib.suppress(FileNotFoundError, OSError):
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)


class OutputFolder:
    """The output folder of a batch run (see the module docstring for its layout)."""

    def __init__(self, uri: str, fmt: Format) -> None:
        self.uri = uri
        self.format = fmt
        self.fs, self.root = _filesystem(uri, "--output")
        self._names: dict[str, set[str]] | None = None
        if self.fs.isfile(self.root):
            raise InvalidInputError(
                f"--output '{uri}' is a file; batch output is a folder.",
                hint="Pass a folder path (it is created if missing).",
                field="output",
                value=uri,
            )

    def _uri(self, path: str) -> str:
        return self.fs.unstrip_protocol(path) if "://" in self.uri else path

    def part_name(
        self, input_uri: str, stem: str, model_version: str, identity: str | None = None
    ) -> str:
        """The part's name (after `part-`) for one input file and model version; with the
        file's IDENTITY (`InputFile.identity`), a changed file gets a new name."""
        key = _input_key(input_uri, model_version)
        if identity:
            key += "-" + hashlib.sha256(identity.encode()).hexdigest()[:8]
        return f"v{model_version}-{stem}-{key}.{'parquet' if self.format == 'parquet' else 'csv'}"

    def part_path(self, name: str) -> str:
        return f"{self.root}/part-{name}"

    def existing_part(self, name: str) -> tuple[str, int | None] | None:
        """(URI, rows or None) of a part an earlier run wrote, or None."""
        path = self.part_path(name)
        if not self.fs.exists(path):
            return None
        rows = None
        if self.format == "parquet":
            with contextlib.suppress(Exception), self.fs.open(path, "rb") as handle:
                rows = pq.read_metadata(handle).num_rows
        return self._uri(path), rows

    def _part_names(self) -> list[str]:
        try:
            paths = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in paths]

    def stale_parts(self, name: str, input_uri: str) -> list[str]:
        """Names of the other parts of INPUT_URI in the folder, which NAME replaces: of an
        earlier content of the file, of another model version or format, or from before parts
        had an identity. Each part's key is the hash of its input and its own version, so a
        part is matched to its input file whatever version wrote it."""
        if _PART.match(f"part-{name}") is None:
            return []
        if self._names is None:  # one listing per run, kept up to date by `replaced`
            self._names = {}
            for part in self._part_names():
                if (found := _PART.match(part)) is not None:
                    self._names.setdefault(found["stem"], set()).add(part[len("part-") :])
        stem = _PART.match(f"part-{name}")["stem"]
        return sorted(
            other
            for other in self._names.get(stem, set()) - {name}
            if (found := _PART.match(f"part-{other}")) is not None
            and found["key"] == _input_key(input_uri, found["version"])
        )

    def replaced(self, name: str, stale: list[str]) -> None:
        """Remove the STALE parts (with their rejects and records) now that NAME replaces
        them, so no input row is in the folder twice."""
        for old in stale:
            for path in (
                self.part_path(old),
                f"{self.root}/{REJECTS_DIR}/rejects-{old}",
                self._record_path(old),
            ):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(path)
            logger.info("Removed part-%s: its input was scored again into part-%s", old, name)
        if self._names is not None and (match := _PART.match(f"part-{name}")) is not None:
            self._names.setdefault(match["stem"], set()).difference_update(stale)
            self._names[match["stem"]].add(name)

    def remove_rejects(self, name: str) -> None:
        """Remove a rejects file an earlier, failed attempt at NAME left."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(f"{self.root}/{REJECTS_DIR}/rejects-{name}")

    def _record_path(self, name: str) -> str:
        return f"{self.root}/{RECORDS_DIR}/part-{name}.json"

    def record(self, name: str, scored: FileResult) -> None:
        """Keep what scored part NAME (for manifests of later runs), temporary name first."""
        path = self._record_path(name)
        self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        tmp = f"{path.rpartition('/')[0]}/.{path.rpartition('/')[2]}.tmp"
        with self.fs.open(tmp, "wb") as handle:
            handle.write(scored.model_dump_json(indent=2).encode())
        self.fs.mv(tmp, path)

    def read_record(self, name: str) -> FileResult | None:
        """The record of part NAME, or None (a part from before records, or a crash)."""
        try:
            with self.fs.open(self._record_path(name), "rb") as handle:
                return FileResult.model_validate_json(handle.read())
        except (FileNotFoundError, ValidationError, ValueError):
            return None

    def rebuild_record(
        self, name: str, input_uri: str, model_version: str, identity: str
    ) -> FileResult:
        """Write the record of part NAME from the part itself (a run stopped between renaming
        the part and writing its record); its rejects are counted, rows read are not known."""
        scored = FileResult(
            input=input_uri,
            output=self._uri(self.part_path(name)),
            rows_read=None,
            rows_scored=self._count_rows(self.part_path(name)),
            rows_rejected=None,
            model_version=model_version,
            identity=identity,
        )
        rejects = f"{self.root}/{REJECTS_DIR}/rejects-{name}"
        if self.fs.exists(rejects):
            scored.rejects = self._uri(rejects)
            scored.rows_rejected = self._count_rows(rejects)
        else:
            scored.rows_rejected = 0
        if scored.rows_scored is not None and scored.rows_rejected is not None:
            scored.rows_read = scored.rows_scored + scored.rows_rejected
        self.record(name, scored)
        return scored

    def _count_rows(self, path: str) -> int | None:
        with contextlib.suppress(Exception), self.fs.open(path, "rb") as handle:
            if self.format == "parquet":
                return pq.read_metadata(handle).num_rows
            return sum(b.num_rows for b in pacsv.open_csv(handle))
        return None

    def records(self) -> list[FileResult]:
        """Every part in the folder that has a record, by part name."""
        names = self._part_names()
        out = []
        for part in sorted(n for n in names if _PART.match(n)):
            record = self.read_record(part[len("part-") :])
            if record is not None:
                out.append(record)
        return out

    def part_writer(self, name: str) -> TableWriter:
        return TableWriter(self.fs, self.part_path(name), self.format)

    def rejects_writer(self, name: str) -> TableWriter:
        return TableWriter(self.fs, f"{self.root}/{REJECTS_DIR}/rejects-{name}", self.format)

    def uri_of(self, writer: TableWriter) -> str:
        return self._uri(writer.path)

    def start(self) -> None:
        """Create the folder and remove a `_SUCCESS` from an earlier run."""
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            if self.fs.exists(f"{self.root}/{SUCCESS}"):
                self.fs.rm(f"{self.root}/{SUCCESS}")
        except OSError as exc:
            raise BackendError(
                f"The output folder '{self.uri}' cannot be written: {exc}.",
                hint="Check the path and its permissions.",
            ) from exc

    def finish(self, result: BatchResult) -> str:
        """Write the `_SUCCESS` manifest (temporary name, then rename); returns its URI.

        It describes the folder: every part with a record (this run's and earlier runs'),
        with totals, and RESULT as `this_run`."""
        files = self.records()
        manifest = Manifest(
            model_uri=result.model_uri,
            model_name=result.model_name,
            model_version=result.model_version,
            output=result.output,
            format=result.format,
            written_at=dt.datetime.now(dt.UTC),
            rows_read=sum(f.rows_read or 0 for f in files),
            rows_scored=sum(f.rows_scored or 0 for f in files),
            rows_rejected=sum(f.rows_rejected or 0 for f in files),
            files_count=len(files),
            files=files,
            this_run=result,
        )
        writer = TableWriter(self.fs, f"{self.root}/{SUCCESS}", self.format)
        with self.fs.open(writer.tmp, "wb") as handle:
            handle.write(manifest.model_dump_json(indent=2).encode())
        self.fs.mv(writer.tmp, writer.path)
        return self._uri(writer.path)


def capture_writer(capture_uri: str, relpath: str) -> tuple[TableWriter, str]:
    """A Parquet writer for one capture file at CAPTURE_URI/RELPATH, and that file's URI."""
    fs, root = _filesystem(capture_uri, "--capture-uri")
    path = f"{root}/{relpath}"
    return TableWriter(fs, path, "parquet"), (
        fs.unstrip_protocol(path) if "://" in capture_uri else path
    )
