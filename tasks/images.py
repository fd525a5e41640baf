"""Image steps: `build-image` over `mlops_pipeline.images.build_image` (the logic lives there)."""

from __future__ import annotations

from mlops_pipeline import images
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

build_image = step(images.build_image, name="build-image", cache_policy=NO_CACHE)
