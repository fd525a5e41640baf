"""build-image against a real Docker engine: offline install, labels, user, cached rebuilds."""

from __future__ import annotations

import importlib.metadata
import json
import uuid
from pathlib import Path

import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.images import (
    ImageBuild,
    build_image,
    default_tag,
    model_requirements,
    render_dockerfile,
)
from mlops_pipeline.targets.base import ModelRef
from typer.testing import CliRunner


def test_dockerfile_installs_offline_as_non_root_with_model_last():
    labels = {"mlops.model.name": "iris", "org.opencontainers.image.version": "3"}
    text = render_dockerfile(ModelRef("iris", "3"), "python:3.11-slim", labels)
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line.split()[0] for line in lines if line and line.split()[0].isupper()]

    assert "--no-cache-dir --no-index --find-links /tmp/wheelhouse" in text
    assert "USER 10001:10001" in lines
    assert "HEALTHCHECK" in instructions
    assert 'ENV MLOPS_SERVING_MODEL_NAME="iris" MLOPS_SERVING_MODEL_VERSION="3"' in lines
    assert "MLOPS_SERVING_HOST=0.0.0.0" in text and "MLOPS_SERVING_MODEL_URI=/opt/model" in text
    # the model changes with every version, so it comes after every dependency layer
    assert instructions[-3:] == ["COPY", "ENV", "LABEL"]
    layers = [text.index(step) for step in ("pip install", "COPY mlops_pipeline/", "COPY model/")]
    assert layers == sorted(layers)
    # the health check asks whether the model can score, on the port the service reads
    assert "/ping" in text and "MLOPS_SERVING_PORT" in text
    assert '"org.opencontainers.image.version"="3"' in text


def test_model_requirements_serve_mlflow_with_skinny(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text(
        "mlflow==3.17.2\n# a comment\nscikit-learn==1.9.1\n\nnumpy<3  # trailing\n"
    )
    assert model_requirements(tmp_path) == [
        "mlflow-skinny==3.17.2",
        "scikit-learn==1.9.1",
        "numpy<3",
    ]

    (tmp_path / "requirements.txt").write_text("-e ./local/package\n")
    with pytest.raises(InvalidInputError, match="wheelhouse"):
        model_requirements(tmp_path)


def test_bad_tag_and_unknown_version_are_refused(registered_model):
    with pytest.raises(InvalidInputError, match="Image tag 'Bad Tag'"):
        build_image("models:/iris/1", tag="Bad Tag")
    with pytest.raises(NotFoundError, match="version '7'"):
        build_image("models:/iris/7")


def test_unreachable_engine_is_one_clear_error(registered_model, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(BackendUnavailableError, match="unix:///nonexistent/docker.sock"):
        build_image("models:/iris@champion")


@pytest.mark.docker
def test_image_has_labels_user_healthcheck_and_no_secrets(
    docker_build_env, docker_engine, registered_model, monkeypatch
):
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", "do-not-bake-me")
    build = build_image("models:/iris@champion", tag="mlops-test/iris-labels:1")

    image = docker_engine.images.get(build.tag)
    config = image.attrs["Config"]
    labels = config["Labels"]
    assert build.model == ModelRef("iris", "1") and build.image_id == image.id
    assert labels["mlops.model.name"] == "iris" and labels["mlops.model.version"] == "1"
    assert labels["mlops.model.run_id"] == registered_model["run_id"]
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["org.opencontainers.image.created"] == labels["mlops.build.time"]
    assert labels["mlops.project.version"] == importlib.metadata.version("mlops-pipeline")
    assert config["User"] == "10001:10001"
    assert "/ping" in " ".join(config["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MLOPS_SERVING_MODEL_URI"] == "/opt/model" and env["MLOPS_SERVING_HOST"] == "0.0.0.0"
    assert (env["MLOPS_SERVING_MODEL_NAME"], env["MLOPS_SERVING_MODEL_VERSION"]) == ("iris", "1")
    history = json.dumps([image.attrs, image.history()])
    assert "do-not-bake-me" not in history
    # the wheels stay in the build stage: the final image holds only the installed venv
    listing = docker_engine.containers.run(
        build.tag, ["sh", "-c", "id -u; ls /tmp; ls /opt/model"], remove=True
    ).decode()
    assert listing.split()[0] == "10001"
    assert "wheelhouse" not in listing and "MLmodel" in listing
    docker_engine.images.remove(build.tag, noprune=True)


@pytest.mark.docker
def test_new_model_version_reuses_every_dependency_layer(
    docker_build_env, docker_engine, registered_model, iris_model_dir
):
    # unique per run: the e2e docker loop builds the default tags mlops/iris:N on the same engine
    repo = f"mlops-test/iris-cache-{uuid.uuid4().hex[:8]}"
    first = build_image("models:/iris/1", tag=f"{repo}:1")
    run_flow(register_model, source=str(iris_model_dir), name="iris")

    result = CliRunner().invoke(
        app, ["build-image", "models:/iris/2", "--tag", f"{repo}:2", "--json"]
    )

    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    assert (first.tag, second["tag"]) == (f"{repo}:1", f"{repo}:2")
    assert default_tag(first.model) == "mlops/iris:1"  # the tag without --tag
    assert second["wheelhouse"] == first.wheelhouse
    # everything above `COPY model/` came from cache; at most the 2 FROMs and the 3 model
    # steps ran (the model copy itself is cached too when its files match an earlier build)
    assert second["cached_steps"] >= second["steps"] - 5
    layers = [
        docker_engine.images.get(tag).attrs["RootFS"]["Layers"]
        for tag in (first.tag, second["tag"])
    ]
    assert layers[0][:-1] == layers[1][:-1] and layers[0][-1] != layers[1][-1]
    for tag in (first.tag, second["tag"]):
        docker_engine.images.remove(tag, noprune=True)


def test_image_build_is_typed_and_prints_flat_json():
    build = ImageBuild(
        tag="mlops/iris:3",
        image_id="sha256:abc",
        model_name="iris",
        model_version="3",
        model_uri="models:/iris/3",
        run_id=None,
        base_image="python:3.11-slim",
        context_dir="/tmp/ctx",
        wheelhouse="/tmp/wheels",
        requirements=["scikit-learn==1.9.1"],
        steps=14,
        cached_steps=12,
        seconds=3.5,
    )
    assert build.model == ModelRef("iris", "3")
    shown = build.to_dict()
    assert shown == build.model_dump(mode="json") and json.loads(json.dumps(shown)) == shown
    assert shown["labels"] == {} and shown["run_id"] is None and shown["steps"] == 14
    with pytest.raises(ValueError, match="steps"):
        ImageBuild.model_validate({**shown, "steps": "many"})
