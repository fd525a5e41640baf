"""Deployment-spec steps over `mlops_pipeline.spec` (Prefect-free logic) and the targets.

The ledger, the registry and the secrets are read on every call, so nothing caches (NO_CACHE).
"""

from __future__ import annotations

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.spec import plan as spec_plan
from mlops_pipeline.spec import store
from mlops_pipeline.spec.load import LoadedSpec
from mlops_pipeline.spec.plan import Desired, Plan
from mlops_pipeline.targets.base import get_target
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE


def canonical_target_uri(loaded: LoadedSpec) -> str:
    """The spec's target URI as the ledger records it; an unknown target points at its line.

    Raises:
        InvalidInputError: a malformed or unknown target URI (exit 2), at `target.uri`.
    """
    try:
        return get_target(loaded.spec.target.uri).target_uri
    except InvalidInputError as exc:
        raise loaded.error("target.uri", str(exc)) from exc


def plan_for(loaded: LoadedSpec) -> tuple[Plan, Desired]:
    """What applying LOADED would change now (`mlops_pipeline.spec.plan.plan_spec`)."""
    return spec_plan.plan_spec(loaded, canonical_target_uri(loaded))


def install_api_keys(loaded: LoadedSpec) -> str | None:
    """Read the keys the spec's `auth` names and write the deployment's key file; returns its
    path (None without `auth`). The keys never leave this step (not even as its result)."""
    keys = spec_plan.read_api_keys(loaded)
    return str(spec_plan.write_key_file(loaded.spec.name, keys)) if keys is not None else None


plan_spec = step(plan_for, name="plan-spec", cache_policy=NO_CACHE)
install_keys = step(install_api_keys, name="install-api-keys", cache_policy=NO_CACHE)
save_applied_spec = step(store.save_applied, cache_policy=NO_CACHE)
