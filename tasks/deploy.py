"""Deploy steps over `mlops_pipeline.targets.operations`, and the registry's URI resolution.

The operations talk to the ledger and the target, so none of them caches (NO_CACHE): each call
must see the deployment as it is now.
"""

from __future__ import annotations

from mlops_pipeline import ledger, registry
from mlops_pipeline.targets import operations
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

resolve_model_uri = step(registry.resolve_model_uri, cache_policy=NO_CACHE)
validate_deployment_name = step(operations.validate_deployment_name)
check_scoring_code = step(operations.check_scoring_code, cache_policy=NO_CACHE)
resolve_ensemble = step(operations.resolve_ensemble, cache_policy=NO_CACHE)
target_needs_image = step(operations.target_needs_image)
plan_deployment = step(operations.plan_deployment, cache_policy=NO_CACHE)
preflight_target = step(operations.preflight_target, cache_policy=NO_CACHE)
create_deployment = step(operations.create_deployment, cache_policy=NO_CACHE)
switch_deployment = step(operations.switch_deployment, cache_policy=NO_CACHE)
check_no_challenger = step(operations.check_no_challenger, cache_policy=NO_CACHE)
get_deployment = step(operations.get_deployment, cache_policy=NO_CACHE)
find_deployment = step(ledger.find_deployment, cache_policy=NO_CACHE)
find_rollback_version = step(operations.find_rollback_version, cache_policy=NO_CACHE)
delete_deployment = step(operations.delete_deployment, cache_policy=NO_CACHE)
get_status = step(operations.get_status, cache_policy=NO_CACHE)
list_deployments = step(operations.list_deployments, cache_policy=NO_CACHE)
get_deployment_history = step(operations.get_deployment_history, cache_policy=NO_CACHE)
