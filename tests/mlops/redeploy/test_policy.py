"""The redeploy policy: settings, then the applied spec, then the options given."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.redeploy.loop import redeploy_policy
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec.load import load_spec
from mlops_pipeline.spec.store import redeploy_options, save_applied


def test_the_live_gate_comes_from_the_setting_unless_given(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert redeploy_policy().live_gate == "none"
    monkeypatch.setenv("MLOPS_REDEPLOY_LIVE_GATE", "shadow")
    get_settings.cache_clear()
    assert redeploy_policy().live_gate == "shadow"
    assert redeploy_policy(live_gate="canary").live_gate == "canary"
    assert redeploy_policy(live_gate="none").live_gate == "none"


def test_an_unknown_live_gate_is_one_clear_error(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInputError, match="none, shadow, canary, not 'fast'") as caught:
        redeploy_policy(live_gate="fast")
    assert caught.value.exit_code == 2
    monkeypatch.setenv("MLOPS_REDEPLOY_LIVE_GATE", "fast")
    get_settings.cache_clear()
    with pytest.raises(InvalidInputError, match="MLOPS_REDEPLOY_LIVE_GATE"):
        get_settings()


def test_the_applied_spec_sets_the_live_gate_over_the_setting(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLOPS_REDEPLOY_LIVE_GATE", "shadow")
    get_settings.cache_clear()
    spec_file = tmp_path / "deploy.yaml"
    spec_file.write_text("name: iris-prod\nmodel: models:/iris/1\nredeploy:\n  live_gate: canary\n")
    save_applied(load_spec(spec_file).spec, str(spec_file))
    options = redeploy_options("iris-prod", None, None, None, None)
    assert redeploy_policy(**options).live_gate == "canary"
    given = redeploy_options("iris-prod", None, None, None, "none")
    assert redeploy_policy(**given).live_gate == "none"
    spec_file.write_text(
        "name: iris-prod\nmodel: models:/iris/1\nredeploy:\n  live_gate: sometimes\n"
    )
    with pytest.raises(InvalidInputError, match="live_gate"):
        load_spec(spec_file)
