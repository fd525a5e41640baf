"""Redeploy steps over `mlops_pipeline.redeploy`: policy, episode claim, gate data, challenger,
gate, bake, promotion and the decision's records.

None caches: each reads the registry, the ledger or a live service as it is now. Loading models
and scraping /metrics retry briefly (a registry or service that blinks); the gate itself and
the registry's alias moves do not, so nothing is judged or moved twice.
"""

from __future__ import annotations

from mlops_pipeline.redeploy import gate, loop, records, retrain
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

redeploy_policy = step(loop.redeploy_policy, cache_policy=NO_CACHE)
claim_episode = step(records.claim, name="claim-episode", cache_policy=NO_CACHE)
finish_redeploy = step(records.finish, name="finish-redeploy", cache_policy=NO_CACHE)
log_decision_run = step(records.log_decision_run, cache_policy=NO_CACHE, retries=2)
gate_data = step(loop.gate_data, cache_policy=NO_CACHE)
waiting_challenger = step(loop.waiting_challenger, cache_policy=NO_CACHE)
registered_challenger = step(loop.registered_challenger, cache_policy=NO_CACHE)
challenger_tags = step(loop.challenger_tags, cache_policy=NO_CACHE)
load_trainer = step(retrain.load_trainer, cache_policy=NO_CACHE)
training_data = step(retrain.training_data, cache_policy=NO_CACHE)
retrain_challenger = step(retrain.retrain, name="retrain-challenger", cache_policy=NO_CACHE)
save_challenger = step(loop.save_challenger, cache_policy=NO_CACHE)
load_for_gate = step(loop.load_for_gate, cache_policy=NO_CACHE, retries=2)
evaluate_gate = step(gate.evaluate_gate, cache_policy=NO_CACHE)
champion_snapshot = step(loop.champion_snapshot, cache_policy=NO_CACHE)
champion_figures = step(loop.champion_figures, cache_policy=NO_CACHE, retries=2)
bake = step(loop.bake, name="bake", cache_policy=NO_CACHE)
promote = step(loop.promote, name="promote-challenger", cache_policy=NO_CACHE)
undo_promotion = step(loop.undo_promotion, cache_policy=NO_CACHE)
