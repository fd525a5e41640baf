"""Registry steps: the registration pipeline's steps over `mlops_pipeline.registry`.

Names, retries and cache policies live here; the logic is in the Prefect-free registry module.
Steps that take frames, models or signatures do not cache (NO_CACHE): their inputs do not hash.
"""

from __future__ import annotations

from mlops_pipeline import registry
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

validate_model_name = step(registry.validate_model_name)
validate_alias = step(registry.validate_alias)
resolve_source = step(registry.resolve_source)
load_pickled_model = step(registry.load_pickled_model, cache_policy=NO_CACHE)
load_reference_data = step(registry.load_reference_data)
check_reference_fits = step(registry.check_reference_fits, cache_policy=NO_CACHE)
log_registration_run = step(registry.log_registration_run, cache_policy=NO_CACHE)
create_model_version = step(registry.create_model_version, cache_policy=NO_CACHE)
discard_registration_run = step(registry.discard_registration_run)
set_model_alias = step(registry.set_model_alias)
remove_model_alias = step(registry.remove_model_alias)
get_model_version = step(registry.get_model_version)
list_model_versions = step(registry.list_model_versions)
tag_model_version = step(registry.tag_model_version)
delete_model_versions = step(registry.delete_model_versions)
