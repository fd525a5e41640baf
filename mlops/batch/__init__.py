"""Batch scoring, Prefect-free: files in, scored files out, in bounded memory.

* `sources`: which files an input names; each file as a stream of record batches.
* `checks`: record batches checked against the model signature with the scoring service's rules.
* `output`: parts under temporary names then renamed, rejects files, the `_SUCCESS` manifest.
* `files`: one file scored chunk by chunk into its part, rejects and capture files; the
  progress listener the CLI draws from.
* `scoring`: `score_batch`, the run itself.
* `watermark`: the per-file watermark of `batch:` deployments in the ledger database.
* `landing`: one scheduled run of a `batch:` deployment over its landing folder.
* `results`: the typed results (`FileResult`, `BatchResult`).
"""

from mlops_pipeline.batch.results import BatchResult, FileResult
from mlops_pipeline.batch.scoring import DEFAULT_CHUNK_ROWS, progress_listener, score_batch

__all__ = ["DEFAULT_CHUNK_ROWS", "BatchResult", "FileResult", "progress_listener", "score_batch"]
