"""The shadow flows refuse, before starting anything, a deployment whose live and shadow answers
this process could not read back to join."""

from __future__ import annotations

import pytest
from mlops_pipeline.deployment import Deployment
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.flows.rollout import _readable_captures


def deployment(**config) -> Deployment:
    return Deployment(
        name="iris-prod",
        target_uri="kubernetes:/ml",
        model_name="iris",
        model_version="3",
        model_uri="models:/iris/3",
        config=config,
    )


def test_a_deployment_without_capture_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match="'iris-prod' does not capture its traffic") as e:
        _readable_captures(deployment())
    assert e.value.details["field"] == "capture_uri" and "--capture-dir" in e.value.hint


def test_a_capture_on_a_volume_claim_is_refused_as_unreadable_here() -> None:
    with pytest.raises(InvalidInputError, match="volume claim 'cap', which only its pods") as e:
        _readable_captures(deployment(options={"capture_pvc": "cap"}))
    assert "s3://" in e.value.hint and "instead of capture_pvc" in e.value.hint


def test_a_readable_capture_passes() -> None:
    readable = deployment().model_copy(update={"capture_uri": "s3://bucket/capture"})
    assert _readable_captures(readable) is None
