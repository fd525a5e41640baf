"""Flow: score files with a model version in bounded memory (`mlops score-batch`, `batch:`)."""

from __future__ import annotations

from typing import Any, Literal

from mlops_pipeline.batch import DEFAULT_CHUNK_ROWS
from mlops_pipeline.tasks.batch import score_files, score_new_files
from prefect import flow


@flow(name="score-batch", log_prints=False)
def score_batch(
    model_uri: str,
    input: str,
    output: str,
    format: Literal["parquet", "csv"] = "parquet",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    id_columns: list[str] | None = None,
    error_threshold: int = 0,
    capture_uri: str | None = None,
    deployment: str | None = None,
) -> dict[str, Any]:
    """Score the CSV/Parquet files of INPUT with MODEL_URI into the folder OUTPUT, ending with
    a `_SUCCESS` manifest; files scored before for this model version are skipped.

    With DEPLOYMENT (a `batch:` deployment's scheduled runs) only the files that deployment has
    not scored yet are scored, and each is recorded in its watermark."""
    options: dict[str, Any] = {
        "format": format,
        "chunk_rows": chunk_rows,
        "id_columns": id_columns,
        "error_threshold": error_threshold,
        "capture_uri": capture_uri,
    }
    if deployment:
        result = score_new_files(deployment, model_uri, input, output, **options)
    else:
        result = score_files(model_uri, input, output, **options)
    return result.model_dump(mode="json")
