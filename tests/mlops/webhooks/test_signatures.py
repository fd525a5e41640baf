"""Signatures: GitHub's published vector, MLflow's own signer, staleness, missing headers."""

from __future__ import annotations

import time

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from mlops_pipeline.errors import AuthError
from mlops_pipeline.webhooks.signatures import (
    StaleDeliveryError,
    github_signature,
    mlflow_headers,
    mlflow_signature,
    verify_github,
    verify_mlflow,
)

# docs.github.com, "Validating webhook deliveries": testing the webhook payload validation
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_published_vector() -> None:
    assert github_signature(GITHUB_SECRET, GITHUB_BODY) == GITHUB_VECTOR
    verify_github(GITHUB_SECRET, GITHUB_BODY, GITHUB_VECTOR)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        GITHUB_VECTOR[:-1] + "0",
        GITHUB_VECTOR.replace("sha256=", "sha1="),
        GITHUB_VECTOR.removeprefix("sha256="),
        "sha256=é",
    ],
)
def test_github_refuses_missing_and_wrong_signatures(header: str | None) -> None:
    with pytest.raises(AuthError):
        verify_github(GITHUB_SECRET, GITHUB_BODY, header)


def test_github_signature_covers_the_raw_body() -> None:
    with pytest.raises(AuthError, match="does not match"):
        verify_github(GITHUB_SECRET, GITHUB_BODY + b" ", GITHUB_VECTOR)
    with pytest.raises(AuthError):
        verify_github("another secret", GITHUB_BODY, GITHUB_VECTOR)


def test_mlflow_signature_is_what_mlflow_sends() -> None:
    body = '{"entity": "model_version", "action": "created", "data": {"name": "é"}}'
    ours = mlflow_signature("s3cret", "d-1", "1700000000", body.encode())
    assert ours == _generate_hmac_signature("s3cret", "d-1", "1700000000", body)


def test_mlflow_verification_and_tolerance() -> None:
    body = b'{"entity": "model_version", "action": "created"}'
    now = float(int(time.time()))  # whole seconds, as the header carries
    headers = mlflow_headers("s3cret", "d-2", body, timestamp=int(now))
    args = (headers["X-MLflow-Delivery-Id"], headers["X-MLflow-Timestamp"])
    verify_mlflow("s3cret", body, *args, headers["X-MLflow-Signature"], 300, now=now)
    # key rotation: any of several space-separated signatures may match
    both = "v1,AAAA " + headers["X-MLflow-Signature"]
    verify_mlflow("s3cret", body, *args, both, 300, now=now)
    with pytest.raises(StaleDeliveryError, match="301 s old"):
        verify_mlflow("s3cret", body, *args, headers["X-MLflow-Signature"], 300, now=now + 301)
    with pytest.raises(StaleDeliveryError, match="in the future"):
        verify_mlflow("s3cret", body, *args, headers["X-MLflow-Signature"], 300, now=now - 400)
    # the timestamp and the delivery id are signed too
    with pytest.raises(AuthError):
        verify_mlflow("s3cret", body, "d-3", args[1], headers["X-MLflow-Signature"], 300)
    with pytest.raises(AuthError):
        verify_mlflow(
            "s3cret", body, args[0], str(int(now) + 1), headers["X-MLflow-Signature"], 300
        )


@pytest.mark.parametrize("missing", ["delivery", "timestamp", "signature"])
def test_mlflow_missing_headers(missing: str) -> None:
    body = b"{}"
    h = mlflow_headers("s3cret", "d-4", body)
    values = {
        "delivery": h["X-MLflow-Delivery-Id"],
        "timestamp": h["X-MLflow-Timestamp"],
        "signature": h["X-MLflow-Signature"],
    }
    values[missing] = None
    with pytest.raises(AuthError, match="has no"):
        verify_mlflow(
            "s3cret", body, values["delivery"], values["timestamp"], values["signature"], 300
        )
