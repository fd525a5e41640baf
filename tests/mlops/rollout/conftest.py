"""Fixtures of the rollout tests (defined in support, so CLI tests can import them too)."""

from tests.mlops.rollout.support import fast_rollout, iris_prod  # noqa: F401
