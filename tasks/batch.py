"""Batch scoring steps over `mlops_pipeline.batch`.

Scoring reads and writes files and the ledger, so nothing caches (NO_CACHE). No retries: a
failed run leaves no `_SUCCESS`, and the next run (or the next schedule) resumes by skipping
the files already scored. `score_landing` is a `batch:` deployment's scheduled run
(`batch.landing`: file by file, a bad file recorded in `_FAILED` and skipped until it changes).
"""

from __future__ import annotations

from mlops_pipeline.batch import score_batch
from mlops_pipeline.batch.landing import score_landing as _score_landing
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

score_files = step(score_batch, name="score-files", cache_policy=NO_CACHE)
score_landing = step(_score_landing, name="score-landing-files", cache_policy=NO_CACHE)
