"""Live rollouts: a challenger judged on real traffic through the deployment's proxy.

Prefect-free and target-free: `admin` talks to a deployment's proxy admin API (routes and
stats), `settings` holds the thresholds, `compare` judges a challenger's figures against the
champion's, `canary` runs the steps, `shadow` joins the mirrored captures with the live ones,
`records` writes decisions to the ledger and MLflow, `report` renders the shadow HTML report.
The flows (flows/rollout.py) start and stop the challenger through the target.
"""
