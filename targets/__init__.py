"""Deployment targets: where the scoring service runs (local processes, Docker, ...)."""

from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    ModelRef,
    Target,
    get_target,
    known_schemes,
)

__all__ = [
    "DeployConfig",
    "Deployment",
    "DeploymentStatus",
    "ModelRef",
    "Target",
    "get_target",
    "known_schemes",
]
