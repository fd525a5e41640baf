"""What the scoring service and the pipeline must agree on, written once on the service's side.

The service ships alone inside images and imports nothing of the pipeline, so what both sides must
agree on lives in this module and the pipeline imports it (`mlops_pipeline.serving.contract`):

* the `models:/` URI grammar;
* the capture layout: partition names, file names and the feedback prefix;
* the names of prediction columns in captures and drift;
* how a free local port is found and how a port in use is detected.

It imports only the standard library.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import uuid
from dataclasses import dataclass

# --- models:/ URIs ------------------------------------------------------------------------------

# MLflow's grammar: models:/NAME/VERSION (digits or `latest`) or models:/NAME@ALIAS.
_MODEL_URI = re.compile(
    r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[A-Za-z0-9_-]+))/?$"
)


@dataclass(frozen=True)
class ModelURI:
    """A parsed `models:/` URI: exactly one of `version` (digits or "latest") and `alias` is set."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> ModelURI:
    """Parse `models:/NAME/VERSION`, `models:/NAME/latest` or `models:/NAME@ALIAS`.

    Raises:
        ValueError: URI does not follow that grammar; the message says what was expected.
    """
    match = _MODEL_URI.match(uri.strip())
    if not match:
        raise ValueError(
            f"{uri!r} is not a model URI: write models:/NAME/VERSION, models:/NAME/latest "
            "or models:/NAME@ALIAS."
        )
    return ModelURI(match["name"], match["version"], match["alias"])


def is_model_uri(uri: str) -> bool:
    """Whether URI uses the `models:/` scheme (well-formed or not)."""
    return uri.strip().startswith("models:/")


# --- capture layout ----------------------------------------------------------------
#   <capture_uri>/model=<name>/version=<v>/date=<YYYY-MM-DD>/part-<utc stamp>-<uuid hex>.parquet
#   <capture_uri>/feedback/model=<name>/version=<v>/date=<YYYY-MM-DD>/part-...parquet

FEEDBACK_PREFIX = "feedback"
QUARANTINE_DIR = "_quarantine"
_DATE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_STAMP = "%Y%m%dT%H%M%S%fZ"


# Columns every capture file carries beside the model's inputs and predictions; feedback files
# carry REQUEST_ID, ROW (null: the label is for the whole request), LABEL and TS.
REQUEST_ID = "_request_id"
ROW = "_row"
TS = "_ts"
STATUS = "_status"
LATENCY_MS = "_latency_ms"
LABEL = "label"
METADATA_COLUMNS = (REQUEST_ID, ROW, TS, STATUS)


def partition_dir(model_name: str, model_version: str, *, feedback: bool = False) -> str:
    """`[feedback/]model=<name>/version=<version>`, relative to the capture URI."""
    prefix = f"{FEEDBACK_PREFIX}/" if feedback else ""
    return f"{prefix}model={model_name}/version={model_version}"


def capture_file_path(
    model_name: str,
    model_version: str,
    day: dt.date,
    *,
    feedback: bool = False,
    written: dt.datetime | None = None,
) -> str:
    """Relative path of a new capture file for records of `day` (UTC date), written now.

    `written` (UTC; default now) goes into the file name so files sort by time of writing.
    """
    stamp = (written or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime(_STAMP)
    return (
        f"{partition_dir(model_name, model_version, feedback=feedback)}/"
        f"date={day:%Y-%m-%d}/part-{stamp}-{uuid.uuid4().hex}.parquet"
    )


def capture_glob(model_name: str, model_version: str, *, feedback: bool = False) -> str:
    """Glob, relative to the capture URI, matching every capture file of one model version."""
    return f"{partition_dir(model_name, model_version, feedback=feedback)}/date=*/part-*.parquet"


def partition_date(relpath: str) -> str | None:
    """The `YYYY-MM-DD` of a capture file's `date=` partition, or None if it has none."""
    match = _DATE.search(relpath)
    return match.group(1) if match else None


def file_written_at(relpath: str) -> dt.datetime | None:
    """When a capture file was written (UTC), read from its `part-<stamp>-` name, else None."""
    match = re.search(r"part-(\d{8}T\d{6})(\d{6})?Z?-", relpath.rsplit("/", 1)[-1])
    if not match:
        return None
    seconds, micros = match.groups()
    written = dt.datetime.strptime(seconds, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return written.replace(microsecond=int(micros)) if micros else written


# --- prediction columns ----------------------------------------------------------------

PREDICTION = "prediction"


def prediction_column(output_name: str | int | None = None) -> str:
    """`prediction` for a single output, `prediction.<name>` for one of several outputs."""
    return PREDICTION if output_name is None else f"{PREDICTION}.{output_name}"


def is_prediction_column(column: str) -> bool:
    """Whether a capture column holds a prediction (`prediction` or `prediction.<name>`)."""
    return column == PREDICTION or column.startswith(f"{PREDICTION}.")


# --- ports ----------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on HOST right now (the OS picks it; it may be taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """None when a server could listen on HOST:PORT now, else the OS's reason (e.g. in use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT from our own last run is free to listen on again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
