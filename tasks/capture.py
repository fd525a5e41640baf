"""Steps over `mlops_pipeline.monitoring.captures`: list, read and count a window of captured
traffic, and advance the deployment's watermark once the window's results are saved."""

from __future__ import annotations

from mlops_pipeline.monitoring import captures
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

list_new_captures = step(captures.list_new_captures, cache_policy=NO_CACHE)
read_captures = step(captures.read_captures, cache_policy=NO_CACHE)
summarise_window = step(captures.summarise_window, cache_policy=NO_CACHE)
commit_watermark = step(captures.commit_watermark, cache_policy=NO_CACHE)
