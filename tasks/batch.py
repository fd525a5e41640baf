"""Batch scoring steps over `mlops_pipeline.batch`.

Scoring reads and writes files and the ledger, so nothing caches (NO_CACHE). No retries: a
failed run leaves no `_SUCCESS`, and the next run (or the next schedule) resumes by skipping
the files already scored.
"""

from __future__ import annotations

from mlops_pipeline.batch import score_batch as _score_batch
from mlops_pipeline.batch import watermark
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

score_files = step(_score_batch, name="score-files", cache_policy=NO_CACHE)
score_new_files = step(watermark.score_new_files, cache_policy=NO_CACHE)
