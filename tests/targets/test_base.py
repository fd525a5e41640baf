"""Target discovery through the `mlops.targets` entry points, and the shared records."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.serving.settings import ProxySettings, ServingSettings
from mlops_pipeline.targets import (
    DeployConfig,
    Deployment,
    ModelRef,
    Target,
    get_target,
    known_schemes,
)
from mlops_pipeline.targets.base import serving_env
from mlops_pipeline.targets.local import LocalTarget
from pydantic import ValidationError

from tests.targets.plugin_support import install_plugin

PLUGIN_MODULE = """
from mlops_pipeline.targets.base import Target


class EdgeTarget(Target):
    scheme = "edge"
    needs_image = True

    def create(self, name, model, config, *, image=None):
        raise NotImplementedError

    update = create

    def delete(self, name):
        return None

    def list(self):
        return []

    def get(self, name):
        raise KeyError(name)

    def logs(self, name, tail=100):
        return ""


class NotATarget:
    def __init__(self, uri):
        self.uri = uri
"""


@pytest.fixture
def third_party_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution (dist-info on sys.path) that registers three targets."""
    yield from install_plugin(
        tmp_path,
        monkeypatch,
        "edge_plugin",
        PLUGIN_MODULE,
        {
            "edge": "edge_plugin:EdgeTarget",
            "weird": "edge_plugin:NotATarget",
            "broken": "edge_plugin_missing:Target",
        },
    )


def test_builtin_targets_are_found_by_scheme(mlops_home: Path) -> None:
    assert {"local", "docker"} <= set(known_schemes())
    target = get_target("local")
    assert isinstance(target, LocalTarget)
    assert target.target_uri == "local:"
    assert get_target("LOCAL:").target_uri == "local:"


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInputError) as info:
        get_target("sagemaker:/eu-west-1")
    message = str(info.value)
    assert "Unknown deployment target 'sagemaker:'" in message
    assert "docker:" in message and "local:" in message
    assert info.value.exit_code == 2


def test_malformed_uri_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="no valid scheme"):
        get_target("://nothing")


def test_third_party_target_plugs_in_without_code_changes(third_party_plugin: None) -> None:
    target = get_target("edge:/hub/device-7")
    assert type(target).__name__ == "EdgeTarget" and isinstance(target, Target)
    assert target.location == "/hub/device-7"
    assert target.target_uri == "edge:/hub/device-7"
    assert target.needs_image is True
    assert "edge" in known_schemes()


def test_broken_plugins_fail_with_a_clear_error(third_party_plugin: None) -> None:
    with pytest.raises(InvalidInputError, match="is not a targets.base.Target"):
        get_target("weird:")
    with pytest.raises(InvalidInputError, match="failed to load"):
        get_target("broken:")


def test_target_subclass_must_implement_the_whole_interface() -> None:
    class Partial(Target):
        scheme = "partial"

        def create(self, name, model, config, *, image=None):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Partial("partial:")


def test_deploy_config_rejects_unknown_fields_and_bad_ports() -> None:
    with pytest.raises(ValidationError):
        DeployConfig(prot=8080)
    with pytest.raises(ValidationError):
        DeployConfig(port=70000)
    assert DeployConfig(port=8080).drain_timeout > 0


def test_serving_env_follows_the_scoring_service_contract(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ModelRef("iris", "3")
    config = DeployConfig(capture_uri="/data/capture", api_key_file="/keys", sample_rate=0.5)
    env = serving_env(model.uri, model, config, host="0.0.0.0", port=9000, image="mlops/iris:3")
    assert env == {
        "MLOPS_SERVING_MODEL_URI": "models:/iris/3",
        "MLOPS_SERVING_MODEL_NAME": "iris",
        "MLOPS_SERVING_MODEL_VERSION": "3",
        "MLOPS_SERVING_HOST": "0.0.0.0",
        "MLOPS_SERVING_PORT": "9000",
        "MLOPS_SERVING_WORKERS": "1",
        "MLOPS_SERVING_SAMPLE_RATE": "0.5",
        "MLOPS_SERVING_CAPTURE_URI": "/data/capture",
        "MLOPS_SERVING_API_KEY_FILE": "/keys",
        "MLOPS_SERVING_IMAGE": "mlops/iris:3",
    }
    assert "MLOPS_SERVING_CAPTURE_URI" not in serving_env(model.uri, model, DeployConfig())
    # a sample rate of 0 is a setting, not an absent one
    quiet = serving_env(model.uri, model, DeployConfig(sample_rate=0.0))
    assert quiet["MLOPS_SERVING_SAMPLE_RATE"] == "0.0"

    # the service reads exactly these names, and nothing of the pipeline's MLOPS_ settings
    for name in list(os.environ):
        if name.startswith("MLOPS_"):
            monkeypatch.delenv(name)
    for name, value in {**env, "MLOPS_PORT": "1", "MLOPS_HOME": "/elsewhere"}.items():
        monkeypatch.setenv(name, value)
    settings = ServingSettings()
    assert (settings.model_uri, settings.host, settings.port) == ("models:/iris/3", "0.0.0.0", 9000)
    assert (settings.model_name, settings.model_version, settings.image) == (
        "iris",
        "3",
        "mlops/iris:3",
    )
    assert settings.capture_uri == "/data/capture" and str(settings.api_key_file) == "/keys"
    assert (settings.workers, settings.sample_rate) == (1, 0.5)


def test_readme_documents_every_scoring_service_and_proxy_variable() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for field in ServingSettings.model_fields:
        assert f"`MLOPS_SERVING_{field.upper()}`" in readme, field
    # the paragraph that lists them, however long its explanations grow
    proxy_line = readme[readme.index("reads `MLOPS_SERVING_PROXY_`") :].split("\n\n")[0]
    for field in ProxySettings.model_fields:
        assert f"`{field.upper()}`" in proxy_line, field


def test_deployment_record_round_trips_through_json() -> None:
    record = Deployment(
        name="iris-prod",
        target_uri="local:",
        model_name="iris",
        model_version="3",
        model_uri="models:/iris/3",
        config=DeployConfig(port=8080).model_dump(),
    )
    again = Deployment.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.model == ModelRef("iris", "3")
    assert again.deploy_config.port == 8080
