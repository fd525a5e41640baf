"""Scoring-service images, Prefect-free: one Docker image per registered model version.

* `dockerfile`: the Dockerfile, its labels and the user, port and model directory every image
  bakes in (the docker target relies on them).
* `context`: requirements, the host-built wheelhouse (builds need no network), the serving
  source under our namespace, and the model's artifacts.
* `build`: the Docker engine client and `build_image`, which returns an `ImageBuild`.

Everything public is re-exported here: `from mlops_pipeline import images`.
"""

from mlops_pipeline.images.build import ImageBuild, build_image, docker_client, run_build
from mlops_pipeline.images.context import (
    download_model,
    ensure_wheelhouse,
    model_requirements,
    prepare_context,
    serving_requirements,
)
from mlops_pipeline.images.dockerfile import (
    IMAGE_MODEL_DIR,
    IMAGE_PORT,
    IMAGE_REFERENCE,
    IMAGE_USER,
    default_tag,
    image_labels,
    render_dockerfile,
)

__all__ = [
    "IMAGE_MODEL_DIR",
    "IMAGE_PORT",
    "IMAGE_REFERENCE",
    "IMAGE_USER",
    "ImageBuild",
    "build_image",
    "default_tag",
    "docker_client",
    "download_model",
    "ensure_wheelhouse",
    "image_labels",
    "model_requirements",
    "prepare_context",
    "render_dockerfile",
    "run_build",
    "serving_requirements",
]
