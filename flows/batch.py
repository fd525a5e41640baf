"""Flow: score files with a model version in bounded memory (`mlops score-batch`, `batch:`)."""

from __future__ import annotations

from typing import Any, Literal

from mlops_pipeline.batch import DEFAULT_CHUNK_ROWS
from mlops_pipeline.batch.landing import FAILED
from mlops_pipeline.errors import ValidationFailedError
from mlops_pipeline.tasks.batch import score_files, score_landing
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
    not scored yet (or changed since) are scored, file by file (`batch.landing`): a bad file is
    recorded and skipped until it changes, the others are scored and `_SUCCESS` is written.
    The run then fails (ValidationFailedError naming the first bad file) while any landing file
    is failed, so the Prefect run state and `mlops status` show it; otherwise it completes."""
    options: dict[str, Any] = {
        "format": format,
        "chunk_rows": chunk_rows,
        "id_columns": id_columns,
        "error_threshold": error_threshold,
        "capture_uri": capture_uri,
    }
    if not deployment:
        return score_files(model_uri, input, output, **options).model_dump(mode="json")
    result = score_landing(deployment, model_uri, input, output, **options)
    if result.files_failed:
        first = next(f for f in result.files if f.error)
        raise ValidationFailedError(
            f"{result.files_failed} landing file(s) failed and are skipped until they change "
            f"({result.files_scored} scored this run; _SUCCESS lists them): {first.input}: "
            f"{first.error}",
            hint=f"Fix or replace the file(s), or remove them; reasons are in {output}/{FAILED}.",
            files=[f.input for f in result.files if f.error],
            files_scored=result.files_scored,
        )
    return result.model_dump(mode="json")
