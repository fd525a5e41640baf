"""The `batch:` target: a scheduled Prefect deployment that scores a landing folder's new files.

    mlops deploy models:/churn@champion --name churn-daily \\
        --target 'batch:/landing?output=/scored&cron=0 * * * *'

Target URI: `batch:<landing>?output=<folder>&cron=<cron>` with optional `format=parquet|csv`,
`tz=<IANA zone>` (of the cron; default UTC), `pool=<work pool>` (default `mlops`, created as a
process pool when missing), `id=<col>,<col>` (output only these input columns), `chunk_rows=N`
and `error_threshold=N`. Landing and output are local paths or fsspec URIs. The cron and tz are
checked, and a local landing folder must exist, before anything is created. The deployment's
`target_uri` (in the ledger, `deployments list`, `status`) is the canonical URI: absolute
folders, options in one order, defaults left out, so a deploy of a name with other folders or
options is a conflict (`operations.plan_deployment`), never a silent no-op update.

Design: targets may not import Prefect (import-linter), so this target talks to the Prefect
server's REST API with httpx, the same way the docker: target talks to the Docker engine. The
Prefect deployment is the target's whole runtime state: one per NAME (flow `score-batch`, tags
`mlops`, `mlops-batch`), entry point `mlops_pipeline.flows.batch:score_batch` (installed with
the package, so any process worker of the pool runs it), a cron schedule, a concurrency limit
of 1 (runs never overlap, so the per-file watermark needs no locking), the deploying process's
registry and ledger URIs in the worker's environment (job variables; never a URI carrying a
password, which the worker must then have itself), and parameters that say everything a run
needs: the pinned model version, landing, output, capture URI and NAME. Each run scores the
landing files NAME has not scored yet (`batch.watermark`, in the ledger database) and writes
inputs and predictions in the capture layout too, so `mlops monitor` and the redeploy loop work
as for served deployments. `update` patches the model version in those parameters, so later
runs use it; `delete` removes the Prefect deployment (with its scheduled runs) and NAME's
watermark. The ledger and in-use tags are handled by `targets.operations`, as for every target.

The Prefect API is PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud); its transient
answers (502/503/504, a dropped connection) are retried 3 times, 0.5-2 s apart. `health` reports
`degraded` when the last run failed or no worker polls the pool.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import fsspec
import httpx
from mlops_pipeline.batch import watermark
from mlops_pipeline.batch.scoring import DEFAULT_CHUNK_ROWS
from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets.base import DeployConfig, Deployment, DeploymentStatus, ModelRef, Target

__all__ = ["BatchTarget", "canonical_uri", "validate_cron"]

logger = logging.getLogger(__name__)

FLOW_NAME = "score-batch"
ENTRYPOINT = "mlops_pipeline.flows.batch:score_batch"
TAGS = ["mlops", "mlops-batch"]
DEFAULT_POOL = "mlops"
CAPTURE_DIR = "_captures"
# the order of the canonical target URI; with the defaults it leaves out
_ORDER = ("output", "cron", "tz", "format", "id", "pool", "chunk_rows", "error_threshold")
_OPTIONS = set(_ORDER)
_DEFAULTS = {
    "tz": "UTC",
    "format": "parquet",
    "pool": DEFAULT_POOL,
    "chunk_rows": str(DEFAULT_CHUNK_ROWS),
    "error_threshold": "0",
}
# transient answers of a Prefect server under load or restarting: retried a few times
_RETRY_STATUS = {502, 503, 504}
_RETRY_DELAYS = (0.5, 1.0, 2.0)

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = (  # name, lowest, highest, and the names the field accepts
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_CRON_ITEM = re.compile(r"^(\*|(\w+)(-(\w+))?)(/(\d+))?$")


def validate_cron(cron: str) -> str:
    """CRON if it is a 5-field cron expression Prefect schedules; InvalidInputError (exit 2)
    otherwise. Checked here because the server's refusal is a long pydantic JSON, and targets
    may not import Prefect's own validator."""
    fields = cron.split()
    problem = None if len(fields) == len(_CRON_FIELDS) else f"it has {len(fields)} fields"
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS, strict=False):
        if problem:
            break
        for item in text.lower().split(","):
            match = _CRON_ITEM.match(item)
            values = [v for v in (match.group(2), match.group(4)) if v] if match else None
            if values is None or (match.group(6) is not None and int(match.group(6)) < 1):
                problem = f"'{text}' is not a {field}"
                break
            for value in values:
                ok = value in names or (value.isdigit() and low <= int(value) <= high)
                if not ok:
                    problem = f"{field} '{value}' is not in {low}-{high}"
                    break
            if problem:
                break
    if problem:
        raise InvalidInputError(
            f"cron '{cron}' is not a cron expression (5 fields, e.g. '0 * * * *'): {problem}.",
            hint="Use MINUTE HOUR DAY MONTH WEEKDAY, e.g. cron=0 * * * * (hourly) or "
            "cron=30 2 * * * (daily at 02:30).",
            field="cron",
            value=cron,
        )
    return cron


def canonical_uri(landing: str, options: dict[str, str]) -> str:
    """`batch:<landing>?output=..&cron=..` with the options in one order, defaults left out:
    the ledger records it, so the same folders and schedule always compare equal."""
    query = "&".join(
        f"{key}={quote(options[key], safe='/:*, -@.')}"
        for key in _ORDER
        if options.get(key) and options[key] != _DEFAULTS.get(key)
    )
    return f"batch:{landing}?{query}"


def _absolute(location: str) -> str:
    """Workers run elsewhere: local paths become absolute; URIs stay as they are."""
    return location if "://" in location else str(Path(location).expanduser().resolve())


class BatchTarget(Target):
    """Batch deployments: cron-scheduled Prefect deployments of the `score-batch` flow."""

    scheme = "batch"
    needs_image = False

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        landing, _, query = self.location.partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise InvalidInputError(
                f"The batch target has no option '{unknown[0]}'.",
                hint=f"Options: {', '.join(sorted(_OPTIONS))}.",
                field="target",
                value=target_uri,
            )
        self.options = options
        self.landing = landing
        if landing or query:  # `batch:` alone names the target for list and get
            output = options.get("output")
            needed = (("a landing folder", landing), ("an output folder (?output=)", output))
            for what, value in needed:
                if not value:
                    raise InvalidInputError(
                        f"The batch target needs {what}: got '{target_uri}'.",
                        hint="Use --target 'batch:/landing?output=/scored&cron=0 * * * *'.",
                        field="target",
                        value=target_uri,
                    )
            if not options.get("cron"):
                raise InvalidInputError(
                    f"The batch target needs a schedule: got '{target_uri}'.",
                    hint="Add &cron=MIN HOUR DAY MONTH WEEKDAY, e.g. &cron=0 * * * * (hourly).",
                    field="target",
                    value=target_uri,
                )
            if options.get("format", "parquet") not in ("parquet", "csv"):
                raise InvalidInputError(
                    f"format={options['format']} is not an output format of the batch target.",
                    hint="Use format=parquet or format=csv.",
                    field="target",
                )
            for key in ("chunk_rows", "error_threshold"):
                if key in options and not options[key].isdigit():
                    raise InvalidInputError(
                        f"{key}={options[key]} in the batch target is not a whole number.",
                        field="target",
                    )
                if key in options:
                    options[key] = str(int(options[key]))
            options["cron"] = validate_cron(" ".join(options["cron"].split()))
            if options.get("tz"):
                _validate_tz(options["tz"])
            if options.get("id"):
                options["id"] = ",".join(c.strip() for c in options["id"].split(",") if c.strip())
            self.landing = _absolute(landing)
            self.options["output"] = _absolute(options["output"])
            # the ledger records the full URI: a deploy with other folders or schedule is
            # then a conflict, not an update that silently keeps the old ones
            self.target_uri = canonical_uri(self.landing, self.options)
        else:
            self.target_uri = "batch:"

    # -- Prefect REST API --------------------------------------------------------------------

    def _api(self) -> str:
        url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
        if not url:
            raise BackendUnavailableError(
                "The batch target schedules runs on a Prefect server, and PREFECT_API_URL is "
                "not set.",
                hint="Start one (`mlops up` or `prefect server start`) and set PREFECT_API_URL, "
                "e.g. http://127.0.0.1:4200/api.",
            )
        return url

    def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        api = self._api()
        headers = {}
        if key := os.environ.get("PREFECT_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        # every call here is idempotent (Prefect upserts flows and deployments by name), so a
        # busy server's 502/503/504 or a dropped connection is retried a few times
        for delay in (*_RETRY_DELAYS, None):
            try:
                response = httpx.request(
                    method, f"{api}{path}", json=body, headers=headers, timeout=30.0
                )
            except httpx.TransportError as exc:
                if delay is None:
                    raise BackendUnavailableError(
                        f"The Prefect API at {api} did not answer {method} {path}: {exc}.",
                        hint="Check that the Prefect server runs and PREFECT_API_URL points "
                        "at it, then run the command again.",
                    ) from exc
                logger.info("Prefect API %s %s: %s; retrying in %s s", method, path, exc, delay)
            else:
                if response.status_code not in _RETRY_STATUS or delay is None:
                    break
                logger.info(
                    "Prefect API %s %s: HTTP %s; retrying in %s s",
                    method,
                    path,
                    response.status_code,
                    delay,
                )
            time.sleep(delay)
        if response.status_code == 422:
            raise InvalidInputError(
                f"The Prefect server refused the batch deployment: {_detail(response)}",
                hint="Check the cron expression and tz= of the target URI.",
                field="target",
            )
        if response.status_code >= 400 and response.status_code != 404:
            raise BackendError(
                f"The Prefect API answered {method} {path} with HTTP {response.status_code}: "
                f"{_detail(response)}"
            )
        return response

    def _find(self, name: str, *, foreign: bool = False) -> dict[str, Any] | None:
        """The Prefect deployment of batch deployment NAME; with `foreign`, also one of that
        name that this target did not create."""
        response = self._request("GET", f"/deployments/name/{FLOW_NAME}/{name}")
        if response.status_code == 404:
            return None
        found = response.json()
        return found if foreign or set(TAGS) <= set(found.get("tags") or []) else None

    def _ensure_flow_and_pool(self, pool: str) -> str:
        flow_id = self._request("POST", "/flows/", {"name": FLOW_NAME}).json()["id"]
        if self._request("GET", f"/work_pools/{pool}").status_code == 404:
            # a process worker fills in its default job template on first start
            self._request("POST", "/work_pools/", {"name": pool, "type": "process"})
        return flow_id

    def _parameters(self, name: str, model: ModelRef, config: DeployConfig) -> dict[str, Any]:
        output = self.options["output"]
        params: dict[str, Any] = {
            "model_uri": model.uri,
            "input": self.landing,
            "output": output,
            "format": self.options.get("format", "parquet"),
            "chunk_rows": int(self.options.get("chunk_rows", DEFAULT_CHUNK_ROWS)),
            "error_threshold": int(self.options.get("error_threshold", 0)),
            "capture_uri": config.capture_uri or f"{output.rstrip('/')}/{CAPTURE_DIR}",
            "deployment": name,
        }
        if self.options.get("id"):
            params["id_columns"] = [c.strip() for c in self.options["id"].split(",") if c.strip()]
        return params

    # -- Target ------------------------------------------------------------------------------

    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        if not self.landing:
            raise InvalidInputError(
                "The batch target needs a landing folder, output folder and schedule.",
                hint="Use --target 'batch:/landing?output=/scored&cron=0 * * * *'.",
                field="target",
            )
        _require_landing(self.landing)
        if self._find(name, foreign=True) is not None:  # Prefect would overwrite it
            raise ConflictError(
                f"A batch deployment named '{name}' already exists.",
                hint=f"Use `mlops update {name} --model MODEL_URI`, or undeploy it first.",
                deployment=name,
            )
        pool = self.options.get("pool", DEFAULT_POOL)
        flow_id = self._ensure_flow_and_pool(pool)
        body = {
            "name": name,
            "flow_id": flow_id,
            "entrypoint": ENTRYPOINT,
            "work_pool_name": pool,
            "parameters": self._parameters(name, model, config),
            "enforce_parameter_schema": False,
            "concurrency_limit": 1,
            "job_variables": {"env": _worker_env()},
            "tags": TAGS,
            "description": f"mlops batch deployment '{name}': scores new files of "
            f"{self.landing} into {self.options['output']} on '{self.options['cron']}'.",
            "schedules": [
                {
                    "schedule": {
                        "cron": self.options["cron"],
                        "timezone": self.options.get("tz", "UTC"),
                    },
                    "active": True,
                    "slug": "batch",
                }
            ],
        }
        response = self._request("POST", "/deployments/", body)
        if response.status_code == 404:
            raise BackendError(f"The Prefect API refused the deployment: {_detail(response)}")
        return self.get(name)

    def update(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        found = self._require(name)
        parameters = {**found["parameters"], "model_uri": model.uri}
        if config.capture_uri:
            parameters["capture_uri"] = config.capture_uri
        self._request("PATCH", f"/deployments/{found['id']}", {"parameters": parameters})
        return self.get(name)

    def delete(self, name: str) -> None:
        found = self._find(name)
        if found is not None:
            self._request("DELETE", f"/deployments/{found['id']}")
        watermark.forget(name)

    def list(self) -> list[Deployment]:
        body = {
            "flows": {"name": {"any_": [FLOW_NAME]}},
            "deployments": {"tags": {"all_": TAGS}},
            "sort": "NAME_ASC",
        }
        return [
            self._deployment(d) for d in self._request("POST", "/deployments/filter", body).json()
        ]

    def get(self, name: str) -> Deployment:
        return self._deployment(self._require(name))

    def _require(self, name: str) -> dict[str, Any]:
        found = self._find(name)
        if found is None:
            raise NotFoundError(
                f"No batch deployment named '{name}' on the Prefect server {self._api()}.",
                hint="List them with `mlops deployments list --target batch:`.",
                deployment=name,
            )
        return found

    def _deployment(self, found: dict[str, Any]) -> Deployment:
        params = found.get("parameters") or {}
        model_uri = params.get("model_uri", "")
        model_name, _, version = model_uri.removeprefix("models:/").partition("/")
        schedules = found.get("schedules") or []
        cron = schedules[0]["schedule"].get("cron") if schedules else None
        active = bool(schedules) and schedules[0].get("active") and not found.get("paused")
        ui = self._api().removesuffix("/api")
        options = {
            "landing": params.get("input"),
            "output": params.get("output"),
            "cron": cron,
            "format": params.get("format"),
            "pool": found.get("work_pool_name"),
            "prefect_deployment_id": found["id"],
        }
        options = {key: str(value) for key, value in options.items() if value is not None}
        uri_options = {
            "output": params.get("output"),
            "cron": cron,
            "tz": schedules[0]["schedule"].get("timezone") if schedules else None,
            "format": params.get("format"),
            "id": ",".join(params.get("id_columns") or []),
            "pool": found.get("work_pool_name"),
            "chunk_rows": str(params.get("chunk_rows", DEFAULT_CHUNK_ROWS)),
            "error_threshold": str(params.get("error_threshold", 0)),
        }
        return Deployment(
            name=found["name"],
            target_uri=canonical_uri(params.get("input", ""), uri_options),
            model_name=model_name,
            model_version=version,
            model_uri=model_uri,
            endpoint_url=f"{ui}/deployments/deployment/{found['id']}",
            status=DeploymentStatus.READY if active else DeploymentStatus.STOPPED,
            capture_uri=params.get("capture_uri"),
            created_at=datetime.fromisoformat(found["created"]),
            updated_at=datetime.fromisoformat(found["updated"]),
            config={"capture_uri": params.get("capture_uri"), "options": options},
        )

    def logs(self, name: str, tail: int = 100) -> str:
        found = self._require(name)
        body = {
            "deployments": {"id": {"any_": [found["id"]]}},
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": tail,
        }
        runs = self._request("POST", "/flow_runs/filter", body).json()
        lines = [
            f"{run.get('start_time') or run.get('expected_start_time')} {run['name']} "
            f"{run.get('state_name')}: {(run.get('state') or {}).get('message') or ''}".rstrip()
            for run in reversed(runs)
        ]
        return "\n".join(lines) or f"No runs of batch deployment '{name}' yet."

    def predict(
        self, name: str, payload: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> Any:
        raise InvalidInputError(
            f"Batch deployment '{name}' scores files, not requests.",
            hint="Drop files into its landing folder, or run `mlops score-batch`.",
            deployment=name,
        )

    def health(self, name: str) -> dict[str, Any]:
        """The schedule, next and last run, the last `_SUCCESS`, and a verdict; never raises.

        `health` is `ready`, `degraded` (the schedule is on but its runs fail or nothing runs
        them: the last run failed or crashed, or no worker polls the pool) or `stopped` (the
        schedule is paused); `ready` is true only for `ready`, and `reasons` say why not.
        """
        try:
            found = self._require(name)
            deployment = self._deployment(found)
            options = deployment.config["options"]
            schedules = found.get("schedules") or []
            result: dict[str, Any] = {
                "endpoint_url": deployment.endpoint_url,
                "schedule": options.get("cron"),
                "timezone": schedules[0]["schedule"].get("timezone") if schedules else None,
                "pool": found.get("work_pool_name"),
                "workers": found.get("status"),
            }
            deployment_filter = {"id": {"any_": [found["id"]]}}
            upcoming = self._flow_runs(deployment_filter, ["SCHEDULED"], "EXPECTED_START_TIME_ASC")
            if upcoming:
                result["next_run"] = upcoming[0].get("expected_start_time")
            finished = ["COMPLETED", "FAILED", "CRASHED"]
            last = self._flow_runs(deployment_filter, finished, "START_TIME_DESC")
            if last:
                state = last[0].get("state") or {}
                result["last_run"] = {
                    "state": last[0].get("state_name"),
                    "at": last[0].get("end_time") or last[0].get("start_time"),
                    "message": " ".join(str(state.get("message") or "").split()) or None,
                }
            if manifest := _read_manifest(str(deployment.config["options"].get("output", ""))):
                result["last_output"] = manifest
        except (BackendError, NotFoundError) as exc:
            return {"ready": False, "health": "unknown", "error": str(exc)}
        reasons = []
        if deployment.status != DeploymentStatus.READY:
            verdict = "stopped"
            reasons.append("the schedule is paused")
        else:
            verdict = "ready"
            if last and last[0].get("state_type") in ("FAILED", "CRASHED"):
                reasons.append(f"the last run {last[0].get('state_name')}")
            if found.get("status") != "READY":
                reasons.append(
                    f"no worker polls pool '{result['pool']}': start one with "
                    f"`prefect worker start --pool {result['pool']}`"
                )
            if reasons:
                verdict = "degraded"
        result.update(ready=verdict == "ready", health=verdict)
        if reasons:
            result["reasons"] = reasons
            result["error"] = "; ".join(reasons)
        return result

    def _flow_runs(
        self, deployments: dict[str, Any], states: list[str], sort: str
    ) -> list[dict[str, Any]]:
        body = {
            "deployments": deployments,
            "flow_runs": {"state": {"type": {"any_": states}}},
            "sort": sort,
            "limit": 1,
        }
        return self._request("POST", "/flow_runs/filter", body).json()


def _read_manifest(output: str) -> dict[str, Any] | None:
    """The counts of OUTPUT's `_SUCCESS` (what BI tools read), or None when there is none."""
    if not output:
        return None
    try:
        fs, root = fsspec.core.url_to_fs(output)
        with fs.open(f"{root.rstrip('/')}/_SUCCESS", "rb") as handle:
            manifest = json.loads(handle.read())
    except (ImportError, ValueError, OSError):  # no run finished yet, or not readable here
        return None
    run = manifest.get("this_run") or manifest  # a whole-folder manifest nests the run
    keys = ("finished_at", "model_version", "files_scored", "files_failed", "rows_scored")
    counts = {key: run.get(key) for key in keys}
    if "files_count" in manifest:  # every part in the folder, from this run and earlier ones
        counts["files_in_folder"] = manifest["files_count"]
    return counts


def _worker_env() -> dict[str, str]:
    """The registry and ledger this process uses, for the worker that runs the schedule.

    URIs with a password are left out (they would be stored in Prefect, readable in its UI):
    give such a worker MLOPS_TRACKING_URI / MLOPS_LEDGER_URI in its own environment.
    """
    settings = get_settings()
    env = {"MLOPS_HOME": str(settings.resolved_home)}
    uris = {
        "MLOPS_TRACKING_URI": settings.resolved_tracking_uri,
        "MLOPS_REGISTRY_URI": settings.registry_uri,
        "MLOPS_LEDGER_URI": settings.resolved_ledger_uri,
    }
    for variable, uri in uris.items():
        if uri and urlsplit(uri).password is None:
            env[variable] = uri
    return env


def _validate_tz(tz: str) -> None:
    # Prefect falls back to UTC for a zone it does not know: refuse it instead
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(
            f"tz '{tz}' is not a time zone.",
            hint="Use an IANA zone name, e.g. tz=Europe/Paris (the default is UTC).",
            field="tz",
            value=tz,
        ) from exc


def _require_landing(landing: str) -> None:
    """A missing landing folder is refused at deploy time (as `score-batch` refuses a missing
    input), not found out by runs that score nothing."""
    try:
        fs, path = fsspec.core.url_to_fs(landing)
        exists = fs.isdir(path)
    except (ImportError, ValueError, OSError) as exc:  # remote stores: checked when cheap
        logger.info("Cannot check the landing folder %s (%s); the runs will", landing, exc)
        return
    if not exists:
        raise NotFoundError(
            f"landing folder '{landing}' does not exist.",
            hint="Create it (e.g. `mkdir -p LANDING`) or fix the path, then deploy again.",
            field="landing",
            value=landing,
        )


def _detail(response: httpx.Response) -> str:
    """One line from an error answer: pydantic's messages rather than its raw JSON."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}"
            if isinstance(e, dict)
            else str(e)
            for e in detail
        )
    text = " ".join(str(detail).split())
    return text if len(text) <= 300 else f"{text[:297]}..."
