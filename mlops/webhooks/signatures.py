"""Signatures of the two senders, checked over the raw body in constant time.

* GitHub (docs.github.com, "Validating webhook deliveries"): header `X-Hub-Signature-256:
  sha256=<hex HMAC-SHA256 of the raw body>`, keyed with the webhook's secret.
* MLflow 3 registry webhooks (mlflow.webhooks.delivery, after the Standard Webhooks scheme):
  header `X-MLflow-Signature: v1,<base64 HMAC-SHA256 of "{delivery_id}.{timestamp}.{body}">`,
  with `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (unix seconds) beside it. Several
  space-separated signatures are accepted, as Standard Webhooks allows during a key rotation.

The `sign_*` functions make the same headers, for tests, benchmarks and CI scripts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from mlops_pipeline.errors import AuthError, ConflictError

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_EVENT = "X-GitHub-Event"
GITHUB_DELIVERY = "X-GitHub-Delivery"
MLFLOW_SIGNATURE = "X-MLflow-Signature"
MLFLOW_TIMESTAMP = "X-MLflow-Timestamp"
MLFLOW_DELIVERY = "X-MLflow-Delivery-Id"


class StaleDeliveryError(ConflictError):
    """A delivery's timestamp is outside the tolerance: an old request sent again."""

    code = "stale"


def _digest(secret: str, content: bytes) -> bytes:
    return hmac.new(secret.encode(), content, hashlib.sha256).digest()


def github_signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: the X-Hub-Signature-256 value GitHub sends for BODY."""
    return "sha256=" + _digest(secret, body).hex()


def verify_github(secret: str, body: bytes, header: str | None) -> None:
    """Check X-Hub-Signature-256 against BODY (the raw bytes as received).

    Raises:
        AuthError: the header is missing or does not match (HTTP 401).
    """
    if not header:
        raise AuthError(f"The request has no {GITHUB_SIGNATURE} header.", header=GITHUB_SIGNATURE)
    expected = github_signature(secret, body).encode()
    if not hmac.compare_digest(expected, header.strip().encode("utf-8", "replace")):
        raise AuthError(
            f"The {GITHUB_SIGNATURE} signature does not match the body.",
            hint="Check that the webhook's secret equals MLOPS_GITHUB_WEBHOOK_SECRET.",
            header=GITHUB_SIGNATURE,
        )


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64>`: the X-MLflow-Signature value MLflow sends for BODY."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(_digest(secret, content)).decode()


def mlflow_headers(secret: str, delivery_id: str, body: bytes, timestamp: int | None = None):
    """The three headers MLflow sends with BODY (timestamp: now unless given)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        MLFLOW_DELIVERY: delivery_id,
        MLFLOW_TIMESTAMP: stamp,
        MLFLOW_SIGNATURE: mlflow_signature(secret, delivery_id, stamp, body),
    }


def verify_mlflow(
    secret: str,
    body: bytes,
    delivery_id: str | None,
    timestamp: str | None,
    header: str | None,
    tolerance: float,
    now: float | None = None,
) -> None:
    """Check X-MLflow-Signature over "{delivery_id}.{timestamp}.{body}", then the timestamp.

    The signature is checked first, so an unsigned request learns nothing about timestamps.

    Raises:
        AuthError: a header is missing or the signature does not match (HTTP 401).
        StaleDeliveryError: the timestamp is more than TOLERANCE seconds from now (HTTP 409).
    """
    if not header or not delivery_id or not timestamp:
        name = (
            MLFLOW_SIGNATURE
            if not header
            else MLFLOW_DELIVERY
            if not delivery_id
            else (MLFLOW_TIMESTAMP)
        )
        raise AuthError(f"The request has no {name} header.", header=name)
    expected = mlflow_signature(secret, delivery_id, timestamp, body).encode()
    given = [part.encode("utf-8", "replace") for part in header.split()]
    # every candidate is compared, so the time taken does not say which one matched
    matched = [hmac.compare_digest(expected, candidate) for candidate in given]
    if not any(matched):
        raise AuthError(
            f"The {MLFLOW_SIGNATURE} signature does not match the body.",
            hint="Check that the webhook's secret equals MLOPS_MLFLOW_WEBHOOK_SECRET.",
            header=MLFLOW_SIGNATURE,
        )
    try:
        sent = int(timestamp)
    except ValueError:
        raise AuthError(
            f"{MLFLOW_TIMESTAMP} is not unix seconds.", header=MLFLOW_TIMESTAMP
        ) from None
    skew = (time.time() if now is None else now) - sent
    if abs(skew) > tolerance:
        raise StaleDeliveryError(
            f"The delivery's timestamp is {abs(skew):.0f} s "
            f"{'old' if skew > 0 else 'in the future'}; at most {tolerance:.0f} s is accepted.",
            hint="A sender retries with a fresh timestamp; check the clocks if this repeats.",
            delivery_id=delivery_id,
        )
