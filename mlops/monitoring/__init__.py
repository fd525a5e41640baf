"""Monitoring, Prefect-free: read captures, validate them, test drift, report and signal.

Modules, in the order a monitored window meets them:

* `captures` - list capture files past the watermark, read them (quarantining bad ones), join
  feedback labels, count the window; the watermark lives in the ledger database.
* `reference` - what the deployment serves and the reference bundle stored at registration.
* `profile`, `tables` - column kinds and reference profiles; one CSV/Parquet reader.
* `validation` - Great Expectations suites built from a profile, run on a window.
* `drift`, `drift_stats`, `drift_settings` - per-column drift tests, their statistics and
  their typed settings (`DriftConfig`).
* `report`, `publish`, `episodes` - the HTML report, the MLflow run and artifact texts, and
  the once-per-episode drift signal.
* `results` - the typed results all of them return (`DriftVerdict`, `FeatureDrift`,
  `ValidationResult`, `MonitorResult`, ...).

`mlops_pipeline.tasks.capture` and `mlops_pipeline.tasks.monitoring` wrap these as steps.
"""
