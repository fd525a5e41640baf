"""The build context of an image: requirements, a host-built wheelhouse, the serving source and
the model's artifacts.

Dependencies come only from a wheelhouse built on the host and are installed in the image with
`pip install --no-index --find-links`, so a build needs no network (air-gapped engines, CI).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlops_pipeline.deployment import ModelRef
from mlops_pipeline.errors import BackendError, InvalidInputError
from mlops_pipeline.images.dockerfile import PROJECT
from mlops_pipeline.settings import get_settings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

logger = logging.getLogger(__name__)

SERVING_EXTRA = "serving"


def serving_requirements(extra: str = SERVING_EXTRA) -> list[str]:
    """The scoring service's runtime requirements: the project's `serving` extra (or `extra`,
    e.g. `s3` for captures on object storage)."""
    try:
        declared = importlib.metadata.requires(PROJECT) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackendError(
            f"The {PROJECT} package metadata is missing.",
            hint="Install the project (pip install -e .) before building images.",
        ) from exc
    found = []
    for line in declared:
        req = Requirement(line)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            req.marker = None
            found.append(str(req))
    if not found:
        raise BackendError(
            f"The installed {PROJECT} declares no '{extra}' extra.",
            hint="Reinstall the project (pip install -e .) so its metadata is current.",
        )
    return found


def model_requirements(model_dir: Path) -> list[str]:
    """The model's requirements.txt, with `mlflow` served by the lighter `mlflow-skinny`.

    The image only loads and scores the model; full mlflow adds the tracking server, UI and
    database stack, which is most of its install size and build time.
    """
    path = model_dir / "requirements.txt"
    if not path.is_file():
        raise InvalidInputError(
            f"The model at {model_dir} has no requirements.txt.",
            hint="Log the model with MLflow 2+ so it records its requirements.",
        )
    found = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidInputError(
                f"The model's requirements.txt has a line pip options or paths cannot be "
                f"installed from a wheelhouse: '{line}'.",
                hint="Re-log the model with plain requirement specifiers.",
            ) from exc
        if canonicalize_name(req.name) == "mlflow":
            req.name = "mlflow-skinny"
        found.append(str(req))
    return found


def ensure_wheelhouse(requirements: list[str]) -> Path:
    """A directory of wheels for `requirements`, built once per requirement set on the host.

    Cached under MLOPS_WHEELHOUSE (default MLOPS_HOME/wheelhouse), keyed by the requirement set,
    the Python version and the platform, since compiled wheels fit only a matching interpreter.
    """
    settings = get_settings()
    root = (settings.wheelhouse or settings.resolved_home / "wheelhouse").expanduser().resolve()
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
    key = hashlib.sha256("\n".join([tag, *requirements]).encode()).hexdigest()[:16]
    target = root / f"{tag}-{key}"
    if target.is_dir():
        return target
    logger.info("Building the wheelhouse for %d requirements (once per set)", len(requirements))
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    (staging / "requirements.txt").write_text("\n".join(requirements) + "\n")
    cmd = [
        sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--progress-bar",
        "off", "--prefer-binary", "--wheel-dir", str(staging),
        "--requirement", str(staging / "requirements.txt"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BackendError(
            f"Building the wheelhouse failed: {last}",
            hint="The host needs PyPI access, or point pip at local wheels with "
            "PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR (or set MLOPS_WHEELHOUSE).",
        )
    try:
        staging.rename(target)
    except OSError:
        # another build finished the same set first; theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return target


def prepare_context(requirements: list[str], wheelhouse: Path, context: Path) -> None:
    """Lay out the build context: requirements, wheels (hard links), serving source."""
    (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
    wheels = context / "wheelhouse"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            os.link(wheel, wheels / wheel.name)
        except OSError:  # another filesystem
            shutil.copy2(wheel, wheels / wheel.name)
    # The image carries only the scoring service, under our namespace so that nothing on the
    # model's own path can shadow it; the package is found through our own import, not sys.path.
    from mlops_pipeline import serving

    source = Path(serving.__file__).parent
    package = context / "mlops_pipeline"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""mlops-pipeline: only the scoring service ships here."""\n'
    )
    shutil.copytree(
        source, package / "serving", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


def add_scoring_code(path: str, context: Path) -> str:
    """Copy the scoring module into `context/code/`; returns its file name there."""
    code = context / "code"
    shutil.rmtree(code, ignore_errors=True)
    code.mkdir()
    shutil.copy2(path, code / Path(path).name)
    return Path(path).name


def download_members(members: list[ModelRef], context: Path) -> list[Path]:
    """Fetch ensemble members (after the primary) into `context/members/1`, `2`, ..."""
    root = context / "members"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    return [download_model(m, context, f"members/{i}") for i, m in enumerate(members, start=1)]


def download_model(model: ModelRef, context: Path, subdir: str = "model") -> Path:
    """Fetch the model version's artifacts into `context/<subdir>` (default `model`)."""
    target = context / subdir
    shutil.rmtree(target, ignore_errors=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=str(target))
    except MlflowException as exc:
        raise BackendError(
            f"Downloading the artifacts of {model.uri} failed: {exc.message}",
            hint="Check that the artifact store is reachable.",
        ) from exc
    local_path = Path(local)
    if local_path != target:
        # mlflow may nest the files one level down; the Dockerfile copies `model/` as is
        staged = target.parent / f".model-{uuid.uuid4().hex[:8]}"
        local_path.rename(staged)
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    return target
