"""The redeploy loop's domain, free of Prefect: gate, holdout, bake period and retraining.

* `gate`: score champion and challenger on the same holdout with an `sklearn.metrics` metric
  (`metrics`: names, directions, inputs); choose that holdout (labelled captures, else a
  held-out split of the reference data; `labelled` prepares those rows).
* `bake`: watch a new version for a bounded time and judge its error rate and p95 latency
  against the champion's; `scrape` reads them from the scoring service's Prometheus `/metrics`.
* `retrain`: load the configured `module:function` trainer, assemble its training data
  (reference rows plus captured inputs joined with their feedback labels) and run it.
* `results`: the typed results (`RedeployDecision` and its parts) the flow and CLI turn into JSON.

Steps, flows and the CLI wire these; this package imports none of them.
"""
