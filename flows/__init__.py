"""Prefect flows, one per pipeline step; `run_flow` runs them tracked or in-process.

How a flow and its steps run is decided in one place, `mlops_pipeline.tasks.orchestration`.
"""

from mlops_pipeline.tasks.orchestration import run_flow

__all__ = ["run_flow"]
