"""build-image: a Docker image that serves one registered model version.

Dependencies come only from a wheelhouse built on the host and are installed in the image with
`pip install --no-index --find-links`, so a build needs no network (air-gapped engines, CI).
Layers go from slowest-changing to fastest: base -> venv from the wheelhouse -> serving source
-> model artifacts -> labels, so a new model version with unchanged requirements reuses every
dependency layer and rebuilds in seconds. The context is laid out by `images.context`, the
Dockerfile written by `images.dockerfile`; this module drives the Docker engine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from mlops_pipeline.deployment import DeployConfig, EnsembleConfig, ModelRef, served_models
from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    DeploymentError,
    InvalidInputError,
)
from mlops_pipeline.images.context import (
    add_scoring_code,
    download_members,
    download_model,
    ensure_wheelhouse,
    model_requirements,
    prepare_context,
    serving_requirements,
)
from mlops_pipeline.images.dockerfile import (
    IMAGE_REFERENCE,
    default_tag,
    image_labels,
    member_dirs,
    render_dockerfile,
)
from mlops_pipeline.registry import get_model_version, resolve_model_uri
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tracking import connect
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)


def _config(ensemble: EnsembleConfig | None) -> DeployConfig:
    return DeployConfig(ensemble=ensemble)


class ImageBuild(BaseModel):
    """The result of one image build: the image, the model version it serves, and how it was built.

    `context_dir` and `wheelhouse` are host paths; `steps`/`cached_steps` count Dockerfile steps
    run and reused from Docker's cache; `seconds` is the wall time of the whole build.
    """

    tag: str
    image_id: str
    model_name: str
    model_version: str
    model_uri: str
    run_id: str | None
    base_image: str
    context_dir: str
    wheelhouse: str
    requirements: list[str]
    steps: int
    cached_steps: int
    seconds: float
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def model(self) -> ModelRef:
        return ModelRef(self.model_name, self.model_version)

    def to_dict(self) -> dict[str, Any]:
        """The build as JSON-able values (what `build-image --json` prints)."""
        return self.model_dump(mode="json")


def docker_client(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine in DOCKER_HOST (default local socket), checked with a ping.

    Raises:
        BackendUnavailableError: the engine does not answer (exit 6).
    """
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise BackendUnavailableError(
            f"Docker engine not reachable at {host}.",
            hint="Start it (as root: bash .ci/docker.sh, or systemctl start docker) "
            "or point DOCKER_HOST at a running engine.",
        ) from exc
    return client


def run_build(
    client: docker.DockerClient, context: Path, tag: str, no_cache: bool = False
) -> tuple[str, int, int]:
    """Build `context` as `tag`, streaming the log; returns (image id, steps, cached steps)."""
    steps = cached = 0
    image_id = None
    tail: list[str] = []
    try:
        for chunk in client.api.build(
            path=str(context), tag=tag, rm=True, forcerm=True, decode=True, nocache=no_cache
        ):
            if "error" in chunk:
                raise DeploymentError(
                    f"Building image {tag} failed: {chunk['error'].strip()}",
                    hint=f"The build context and Dockerfile are in {context}; check that the "
                    "base image exists locally and runs the same Python as this host.",
                    log_tail="\n".join(tail[-20:]),
                )
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            for line in chunk.get("stream", "").splitlines():
                line = line.strip()
                if not line:
                    continue
                tail.append(line)
                if line.startswith("Step "):
                    steps += 1
                    logger.info("%s", line)
                elif line == "---> Using cache":
                    cached += 1
                else:
                    logger.debug("%s", line)
    except docker.errors.APIError as exc:
        raise BackendError(
            f"The Docker engine refused the build of {tag}: {exc.explanation or exc}",
            hint=f"The build context is in {context}.",
        ) from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise BackendUnavailableError(
            f"The Docker engine stopped answering during the build of {tag}: {exc}",
            hint="Check that dockerd is running, then build again.",
        ) from exc
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id, steps, cached


def _variant(scoring_code: str | None, ensemble: EnsembleConfig | None) -> str:
    """A short digest of the scoring code and ensemble an image bakes in ("" for neither), so
    images of one model version with other code or members get their own tag and context."""
    if scoring_code is None and ensemble is None:
        return ""
    digest = hashlib.sha256(ensemble.model_dump_json().encode() if ensemble else b"")
    if scoring_code is not None:
        digest.update(Path(scoring_code).read_bytes())
    return digest.hexdigest()[:8]


def image_tag(
    model: ModelRef, scoring_code: str | None = None, ensemble: EnsembleConfig | None = None
) -> str:
    """The tag `build_image` gives by default: `mlops/<name>:<version>`, plus `-<digest>` of
    the scoring code and resolved ensemble it bakes in."""
    variant = _variant(scoring_code, ensemble)
    return default_tag(model) + (f"-{variant}" if variant else "")


def build_image(
    model_uri: str,
    tag: str | None = None,
    base_image: str | None = None,
    no_cache: bool = False,
    scoring_code: str | None = None,
    ensemble: EnsembleConfig | None = None,
) -> ImageBuild:
    """Build a scoring-service image for a registered model version (offline, from wheels).

    Args:
        model_uri: `models:/NAME/VERSION`, `models:/NAME/latest` or `models:/NAME@ALIAS`.
        tag: image reference to tag it with (default `mlops/<name>:<version>`, plus
            `-<digest>` with scoring code or an ensemble).
        base_image: Python base image (default MLOPS_BASE_IMAGE); must run the host's Python.
        no_cache: rebuild every layer.
        scoring_code: path of a scoring module to bake in (serving/user_code.py).
        ensemble: resolved members (the first is `model_uri`) and combiner to bake in; the
            other members' artifacts and requirements go into the image too.

    Raises:
        InvalidInputError: a bad tag or model URI (exit 2).
        NotFoundError: the model version does not exist (exit 3).
        BackendError / BackendUnavailableError: MLflow, pip or the engine failed (exit 5/6).
        DeploymentError: the Dockerfile build failed; carries the log tail (exit 7).
    """
    started = time.monotonic()
    if tag is not None and not IMAGE_REFERENCE.match(tag):
        raise InvalidInputError(
            f"Image tag '{tag}' is not a valid Docker image reference.",
            hint="Use lowercase path components and an optional :tag, e.g. mlops/iris:3.",
            field="tag",
            value=tag,
        )
    base_image = base_image or get_settings().base_image
    connect()
    model = resolve_model_uri(model_uri)
    run_id = get_model_version(model.name, version=model.version).run_id
    variant = _variant(scoring_code, ensemble)
    tag = tag or image_tag(model, scoring_code, ensemble)
    # connect first, to fail fast before any download when the engine is down; builds are
    # long and silent in places (pip install), hence the long read timeout
    client = docker_client(timeout=1800)
    try:
        client.images.get(base_image)
    except docker.errors.ImageNotFound:
        logger.warning("Base image %s is not in the local engine; Docker will pull it", base_image)
    context = get_settings().resolved_home / "builds" / model.name / model.version / variant
    context.mkdir(parents=True, exist_ok=True)
    logger.info("Building %s for %s (base %s) in %s", tag, model.uri, base_image, context)
    model_dir = download_model(model, context)
    others = [served for served in served_models(model, _config(ensemble)) if served != model]
    model_dirs = [model_dir, *download_members(others, context)]
    code_name = add_scoring_code(scoring_code, context) if scoring_code else None
    ensemble_json = (
        ensemble.serving_json(member_dirs(len(others))) if ensemble is not None else None
    )
    extras = [
        req for extra in get_settings().image_extra_names for req in serving_requirements(extra)
    ]
    from_models = [req for path in model_dirs for req in model_requirements(path)]
    requirements = sorted(set(from_models + serving_requirements() + extras))
    wheelhouse = ensure_wheelhouse(requirements)
    prepare_context(requirements, wheelhouse, context)
    labels = image_labels(model, run_id, base_image, wheelhouse.name)
    dockerfile = render_dockerfile(
        model, base_image, labels, scoring_code=code_name, ensemble_json=ensemble_json
    )
    (context / "Dockerfile").write_text(dockerfile)
    image_id, steps, cached = run_build(client, context, tag, no_cache)
    seconds = round(time.monotonic() - started, 2)
    logger.info("Built %s (%s) in %.1f s, %d of %d steps from cache", tag, image_id, seconds,
             cached, steps)  # fmt: skip
    return ImageBuild(
        tag=tag,
        image_id=image_id,
        model_name=model.name,
        model_version=model.version,
        model_uri=model.uri,
        run_id=run_id,
        base_image=base_image,
        context_dir=str(context),
        wheelhouse=str(wheelhouse),
        requirements=requirements,
        steps=steps,
        cached_steps=cached,
        seconds=seconds,
        labels=labels,
    )
