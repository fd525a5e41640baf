"""Webhooks that start pipeline runs: GitHub and MLflow registry events, signed and replay-safe.

Prefect-free core of `mlops webhook serve` (the CLI wires the Prefect side in):

* `settings`: the receiver process's settings (MLOPS_WEBHOOK_*) and its two secrets
  (MLOPS_GITHUB_WEBHOOK_SECRET, MLOPS_MLFLOW_WEBHOOK_SECRET);
* `signatures`: GitHub's `X-Hub-Signature-256` and MLflow's `X-MLflow-Signature` (HMAC-SHA256,
  compared in constant time), and the timestamp tolerance;
* `replay`: the durable replay store, a table in the ledger database claimed once per delivery;
* `mapping`: which event starts which Prefect deployment with which parameters (a YAML or JSON
  file; `.ci/examples/webhooks.yaml` documents one);
* `app`: the FastAPI receiver, which starts runs through an injected `StartRun` callable.
"""
