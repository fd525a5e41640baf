"""Typed results of batch scoring: one `FileResult` per input file, one `BatchResult` per run.

`BatchResult` is also what the `_SUCCESS` manifest holds (as JSON) and what `mlops score-batch
--json` prints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Format = Literal["parquet", "csv"]


class FileResult(BaseModel):
    """What happened to one input file.

    `skipped` files were scored by an earlier run for the same model version and content (their
    output part exists, or the batch deployment's watermark lists them); their row counts come
    from the part's record in `_parts/` (None when unknown: a watermark without a part here).
    """

    input: str = Field(description="The input file, as a path or fsspec URI.")
    output: str | None = Field(default=None, description="Its output part.")
    rejects: str | None = Field(default=None, description="Its rejects file, if rows failed.")
    capture: str | None = Field(default=None, description="Its capture file, if captured.")
    rows_read: int | None = 0
    rows_scored: int | None = 0
    rows_rejected: int | None = 0
    skipped: bool = False
    model_version: str | None = Field(default=None, description="The version that scored it.")
    identity: str | None = Field(
        default=None, description="Size and modification time (or checksum) when scored."
    )
    error: str | None = Field(
        default=None, description="Why the file could not be scored (runs that keep going)."
    )


class BatchResult(BaseModel):
    """A whole run: the model, where it read and wrote, row counts and every file's result."""

    model_uri: str = Field(description="models:/NAME/VERSION (pinned) or the model's path.")
    model_name: str
    model_version: str
    input: str
    output: str
    format: Format
    started_at: datetime
    finished_at: datetime | None = None
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    files_scored: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    files: list[FileResult] = Field(default_factory=list)

    @property
    def seconds(self) -> float:
        end = self.finished_at or self.started_at
        return (end - self.started_at).total_seconds()


class Manifest(BaseModel):
    """The `_SUCCESS` manifest: the whole output folder, and what the run that wrote it did.

    `files` are all the input files scored into the folder, by this run or earlier ones (each
    with the model version that scored it), and the row counts their totals; `this_run` is the
    run's `BatchResult` (its files include those it skipped as already scored).
    """

    model_uri: str = Field(description="The model version of the run that wrote the manifest.")
    model_name: str
    model_version: str
    output: str
    format: Format
    written_at: datetime
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    files_count: int = 0
    files: list[FileResult] = Field(default_factory=list)
    this_run: BatchResult
