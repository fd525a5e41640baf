"""The redeploy flow with a live gate: the offline gate first, then a canary on live traffic."""

from __future__ import annotations

from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlops_pipeline import ledger
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.redeploy import redeploy
from mlops_pipeline.redeploy.records import decisions
from mlops_pipeline.registry.versions import get_model_version
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tasks.demo import wait_for_captures
from sklearn.linear_model import LogisticRegression

from tests.mlops.rollout.test_shadow_local import LABELS, PAYLOAD
from tests.targets.local_support import LoadClient, register_version


def test_redeploy_with_a_canary_live_gate_promotes_under_load(
    iris_prod: dict,
    iris_frame: pd.DataFrame,
    iris_features: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.models import infer_signature

    # the offline gate's holdout: 150 labelled captured rows (feedback for live answers)
    monkeypatch.setenv("MLOPS_REDEPLOY_MIN_LABELLED_ROWS", "100")
    # steps of 5 s: the first 2 s of the challenger's latencies stay out of p95 (warm-up);
    # a shared 2-core test machine is noisy, so p95 may be 3x (test_canary_local checks p95)
    monkeypatch.setenv("MLOPS_ROLLOUT_WARMUP_SECONDS", "2")
    monkeypatch.setenv("MLOPS_BAKE_MAX_P95_RATIO", "3")
    # the live gate from the setting, as a scheduled or drift-triggered run gets it
    monkeypatch.setenv("MLOPS_REDEPLOY_LIVE_GATE", "canary")
    get_settings.cache_clear()
    endpoint = iris_prod["endpoint_url"]
    with httpx.Client(timeout=30) as client:
        for _ in range(50):
            r = client.post(f"{endpoint}/invocations", json=PAYLOAD)
            feedback = [
                {"request_id": r.headers["x-request-id"], "row": i, "label": label}
                for i, label in enumerate(LABELS)
            ]
            assert client.post(f"{endpoint}/feedback", json={"feedback": feedback}).is_success
    # labels are flushed apart from the predictions: the gate must see all 150 of each
    captures = Path(iris_prod["capture_uri"])
    assert wait_for_captures(captures, 150, labels=150) >= 150

    # barely regularised, fitted on every iris row: far more confident on any holdout drawn
    # from them than the champion (C=1), so it passes the offline gate on log_loss
    tree = LogisticRegression(C=1e4, max_iter=5000).fit(iris_features, iris_frame["label"])
    model_dir = tmp_path / "tree"
    mlflow.sklearn.save_model(
        tree, model_dir, signature=infer_signature(iris_features, tree.predict(iris_features))
    )
    v2 = register_version(model_dir)
    load = LoadClient(endpoint, max_seconds=150)
    load.start()
    try:
        result = run_flow(
            redeploy, name="iris-prod", challenger=f"models:/iris/{v2}", metric="log_loss",
            bake_seconds=15,
        )  # fmt: skip
    finally:
        load.stop()

    assert result["decision"] == "promoted", result["reason"]
    assert result["scores"]["challenger"] < result["scores"]["champion"]  # log loss: lower wins
    bake = result["bake"]
    assert bake["verdict"] == "healthy" and bake["reasons"][0].startswith("canary promoted")
    assert bake["observed"]["requests"] >= 20 and bake["observed"]["errors"] == 0
    assert load.failures == []
    assert ledger.get_deployment("iris-prod").model_version == v2
    assert get_model_version("iris", alias="champion").version == v2
    rows = decisions("iris-prod")
    # the redeploy's row (claimed first) and the canary's own, with its steps
    assert [r["decision"] for r in rows[-2:]] == ["promoted", "promoted"]
    [canary_row] = [r for r in rows if (r["details"] or {}).get("kind") == "canary"]
    assert [s["percent"] for s in canary_row["details"]["steps"]] == [10.0, 50.0, 100.0]
    assert canary_row["challenger_version"] == v2
