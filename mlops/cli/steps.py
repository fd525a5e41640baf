"""Steps the stack runs warm: with `mlops up`, `mlops register` runs in the step runner.

A new CLI process spends seconds importing Prefect, MLflow and scikit-learn and opening the
registry before a step starts. The stack's `steps` component (`step_runner`) has done all that
once; the CLI posts the step's flow and parameters to it, and it runs them as a flow run on the
stack's Prefect server, one step at a time and in the CLI's working directory (relative paths
mean the same), then answers with the flow's result or its error (code, message, exit code).

The CLI hands a step over only when it would run the same in-process: the stack's Prefect API
is the one the CLI would use, and the settings and the environment that reach MLflow and
object storage match the runner's (`fingerprint`). Otherwise, or when no runner answers, the
step runs in-process as without the stack.

Access: the runner binds 127.0.0.1 and wants the token it writes to
`$MLOPS_HOME/up/steps.token` (mode 0600) on start, so only the user who ran `mlops up` can
start steps in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mlops_pipeline.errors import BackendError, MLOpsError
from mlops_pipeline.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: flows the runner accepts, by the flow's name: the registry step, which a person or a CI job
#: waits on and which is short; deploy, monitor and redeploy run long or own processes
#: (a local deployment's servers), so they stay in the CLI process
STEP_FLOWS = {"register-model": "mlops_pipeline.flows.register:register_model"}
TOKEN_FILE = "steps.token"
#: environment that changes what a step does outside MLOPS_ settings: MLflow's own variables,
#: object-store credentials, and where pickled models' code is imported from
FINGERPRINT_ENV_PREFIXES = ("MLFLOW_", "AWS_", "AZURE_", "GOOGLE_", "PYTHONPATH")
#: set by every `mlops` process before its command (`mlops_pipeline.cli.main_options`) and by
#: the step runner, so both fingerprints see them
CLI_MLFLOW_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
STEP_TIMEOUT_S = 3600.0


def fingerprint(settings: Settings) -> str:
    """A digest of what decides how a step runs: the settings (home resolved) and the
    FINGERPRINT_ENV_PREFIXES environment of this process. Equal digests, equal steps."""
    values = settings.model_dump(mode="json")
    values["home"] = str(settings.resolved_home)
    env = {k: v for k, v in os.environ.items() if k.startswith(FINGERPRINT_ENV_PREFIXES)}
    blob = json.dumps({"settings": values, "env": env}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def token_path(home: Path) -> Path:
    from mlops_pipeline.stack import stack_dir

    return stack_dir(home) / TOKEN_FILE


# --- the CLI side --------------------------------------------------------------------------


def run_step(flow_name: str, **params: Any) -> Any:
    """Run the flow FLOW_NAME (a key of STEP_FLOWS) with PARAMS: in the stack's step runner
    when one serves this MLOPS_HOME with the same settings, else in this process.

    Raises:
        MLOpsError: the step's own error, with its exit code, from either place.
    """
    handed = _hand_over(flow_name, params)
    if handed is not None:
        return handed["result"]
    from mlops_pipeline.cli._output import run_flow

    return run_flow(load_flow(flow_name), **params)


def _hand_over(flow_name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The runner's answer, or None when the step should run here."""
    try:
        settings = get_settings()
    except MLOpsError:
        return None  # the in-process run reports the bad setting
    from mlops_pipeline import stack

    home = settings.resolved_home
    if settings.orchestrate == "never" or not _uses_stack_prefect(stack.running_prefect_api(home)):
        return None
    record = stack.read_state(home).get("steps")
    if record is None:
        return None
    import httpx

    try:
        health = httpx.get(record.health_url, timeout=5).json()
        token = token_path(home).read_text().strip()
    except (httpx.HTTPError, OSError, ValueError) as exc:
        logger.debug("The stack's step runner did not answer (%s): running in-process.", exc)
        return None
    if not isinstance(health, dict) or health.get("fingerprint") != fingerprint(settings):
        logger.debug("The stack's step runner has other settings: running in-process.")
        return None
    try:
        response = httpx.post(
            f"{record.url}/steps",
            json={"flow": flow_name, "params": params, "cwd": os.getcwd()},
            headers={"Authorization": f"Bearer {token}"},
            timeout=STEP_TIMEOUT_S,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing reached it: safe here
        logger.debug("The stack's step runner did not answer (%s): running in-process.", exc)
        return None
    except httpx.HTTPError as exc:  # it may have done the step: running it again could too
        raise BackendError(
            f"The stack's step runner stopped answering during the step ({exc}).",
            hint=f"Check whether it finished (`mlops models list`) before running it again; "
            f"the runner's log is {record.log_file}.",
        ) from exc
    try:
        answer = response.json()
        for line in answer.get("warnings", []):
            logger.warning("%s", line)
        if response.status_code == 200:
            return {"result": answer["result"]}
        error = answer["error"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackendError(
            f"The stack's step runner answered {response.status_code} without a result.",
            hint=f"See its log {Path(record.log_file)}.",
        ) from exc
    raise _error_from(error)


def _uses_stack_prefect(stack_api: str | None) -> bool:
    """True when this process's flow runs would go to the stack's Prefect API STACK_API (see
    `mlops_pipeline.cli.up.stack_prefect_api`)."""
    from mlops_pipeline.cli.up import prefect_profile_api

    if stack_api is None:
        return False
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"] == stack_api
    if "prefect" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url == stack_api
    return prefect_profile_api() is None


def _error_from(error: dict[str, Any]) -> MLOpsError:
    """The MLOpsError subclass the runner raised, rebuilt from its JSON form (same exit code)."""
    kinds = {cls.code: cls for cls in _error_classes(MLOpsError)}
    kind = kinds.get(error.get("code", ""), MLOpsError)
    return kind(error.get("message", "The step failed in the stack's step runner."))


def _error_classes(base: type[MLOpsError]) -> list[type[MLOpsError]]:
    return [base, *(c for sub in base.__subclasses__() for c in _error_classes(sub))]


def load_flow(flow_name: str) -> Any:
    import importlib

    module, _, attribute = STEP_FLOWS[flow_name].partition(":")
    return getattr(importlib.import_module(module), attribute)
