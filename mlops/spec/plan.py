"""What a spec asks for against what the ledger records, field by field.

`resolve` turns a loaded spec into the desired state: model URIs resolved to versions, paths
made absolute (relative to the spec file), replicas and resources mapped onto `DeployConfig`
(`workers` for local/docker/iotedge, `options` min/max_replicas and cpu/memory request/limit for
kubernetes), and a digest of the API keys read from their secrets. `plan` compares it with the
deployment and the spec applied before and says what changes and how:

* `switch`: the target must run new settings or a new version (a zero-downtime update);
* `record`: only the applied spec changes (monitoring, redeploy, the secrets' names);
* `replace`: the deployment would have to be re-created (another target, port or model name),
  which `mlops deploy --spec` refuses: undeploy first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from mlops_pipeline import registry, secrets
from mlops_pipeline.deployment import (
    DeployConfig,
    Deployment,
    EnsembleConfig,
    EnsembleMember,
    ModelRef,
)
from mlops_pipeline.errors import ConflictError, MLOpsError
from mlops_pipeline.settings import get_settings
from mlops_pipeline.spec.load import LoadedSpec
from mlops_pipeline.spec.model import KUBERNETES, DeploymentSpec, SecretRef
from mlops_pipeline.spec.store import AppliedSpec
from pydantic import BaseModel, ConfigDict

Effect = Literal["switch", "record", "replace"]
Action = Literal["none", "create", "update", "record", "replace"]

# DeployConfig field -> the spec field it comes from (options.* and ensemble.* are mapped below)
_CONFIG_FIELDS = {
    "port": "target.port",
    "capture_uri": "capture.uri",
    "sample_rate": "capture.sample_rate",
    "api_key_file": "auth",
    "workers": "replicas",
    "scoring_code": "scoring_code",
    "ensemble.combiner": "combiner",
}
_OPTION_FIELDS = {
    "min_replicas": "replicas",
    "max_replicas": "max_replicas",
    "cpu_request": "resources.cpu.request",
    "cpu_limit": "resources.cpu.limit",
    "memory_request": "resources.memory.request",
    "memory_limit": "resources.memory.limit",
}
#: spec sections kept only in the applied spec (compared with it, never with the target)
RECORDED = ("monitoring", "redeploy", "auth")


class Desired(BaseModel):
    """The deployment a spec asks for, resolved."""

    model_config = ConfigDict(frozen=True)

    name: str
    target_uri: str
    model_name: str
    model_version: str
    config: DeployConfig
    keys_sha256: str | None = None
    scoring_code_sha256: str | None = None

    @property
    def model(self) -> ModelRef:
        return ModelRef(self.model_name, self.model_version)


class Change(BaseModel):
    """One field that differs: its spec path, the value now and the value the file asks for."""

    field: str
    current: Any = None
    desired: Any = None
    effect: Effect


class Plan(BaseModel):
    """What applying a spec does to deployment `name`."""

    name: str
    action: Action
    changes: list[Change]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def key_file_path(name: str) -> Path:
    """Where `mlops deploy --spec` writes deployment NAME's API keys (mode 0600)."""
    return get_settings().resolved_home / "deployments" / name / "api-keys"


def read_api_keys(loaded: LoadedSpec) -> str | None:
    """The key file's text (primary key, then the secondary one) read from the secrets the
    spec names, or None without `auth`.

    Raises:
        InvalidInputError: a named variable is unset or empty (exit 2), pointing at its line.
        NotFoundError / BackendUnavailableError: a Secret block is missing or Prefect is down.
    """
    auth = loaded.spec.auth
    if auth is None:
        return None
    keys = [_read_secret(loaded, "auth.primary", auth.primary)]
    if auth.secondary is not None:
        keys.append(_read_secret(loaded, "auth.secondary", auth.secondary))
    return "".join(f"{key}\n" for key in keys)


def _read_secret(loaded: LoadedSpec, where: str, ref: SecretRef) -> str:
    if ref.env is not None:
        value = os.environ.get(ref.env, "").strip()
        if not value:
            raise loaded.error(
                f"{where}.env", f"environment variable {ref.env} is unset or empty; export it"
            )
        return value
    value = secrets.read_block(ref.block or "", where).get_secret_value().strip()
    if not value:
        raise loaded.error(f"{where}.block", f"Secret block '{ref.block}' is empty")
    return value


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def resolve(loaded: LoadedSpec, target_uri: str, current: Deployment | None = None) -> Desired:
    """The desired state of LOADED: TARGET_URI is the spec's target in the ledger's canonical
    form; CURRENT (the deployment now, if any) gives the settings a spec does not manage
    (ready and drain timeouts).

    Raises:
        InvalidInputError: scoring code that is not a file (exit 2); NotFoundError: a model
            version or alias that does not exist (exit 3); each names the spec's line.
    """
    from mlops_pipeline.tracking import connect

    spec = loaded.spec
    connect()
    refs = [_resolve_model(loaded, spec, i, uri) for i, uri in enumerate(spec.model_uris())]
    if len(set(refs)) != len(refs):
        raise loaded.error(
            "models", f"names one version twice ({', '.join(r.uri for r in refs)}); use a weight"
        )
    ensemble = None
    if spec.models:
        ensemble = EnsembleConfig(
            members=[
                EnsembleMember(model_uri=ref.uri, weight=member.weight)
                for ref, member in zip(refs, spec.models, strict=True)
            ],
            combiner=spec.combiner or "mean",
        )
    code_path, code_sha = _scoring_code(loaded)
    keys = read_api_keys(loaded)
    kubernetes = spec.target_scheme == KUBERNETES
    kept = current.deploy_config if current else DeployConfig()
    config = DeployConfig(
        port=spec.target.port,
        capture_uri=_absolute(loaded, spec.capture.uri) if spec.capture else None,
        sample_rate=spec.capture.sample_rate if spec.capture else 1.0,
        api_key_file=str(key_file_path(spec.name)) if keys is not None else None,
        workers=1 if kubernetes else spec.replicas,
        ready_timeout=kept.ready_timeout,
        drain_timeout=kept.drain_timeout,
        options={**spec.target.options, **(_mapped_options(spec) if kubernetes else {})},
        scoring_code=code_path,
        ensemble=ensemble,
    )
    return Desired(
        name=spec.name,
        target_uri=target_uri,
        model_name=refs[0].name,
        model_version=refs[0].version,
        config=config,
        keys_sha256=digest(keys) if keys is not None else None,
        scoring_code_sha256=code_sha,
    )


def _resolve_model(loaded: LoadedSpec, spec: DeploymentSpec, index: int, uri: str) -> ModelRef:
    where = "model" if spec.model else f"models.{index}.uri"
    try:
        return registry.resolve_model_uri(uri)
    except MLOpsError as exc:
        raise loaded.error(where, str(exc), type(exc)) from exc


def _scoring_code(loaded: LoadedSpec) -> tuple[str | None, str | None]:
    if loaded.spec.scoring_code is None:
        return None, None
    path = (loaded.base_dir / loaded.spec.scoring_code).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise loaded.error(
            "scoring_code", f"{path} is not a Python file; give a .py path relative to the spec"
        )
    return str(path), digest(path.read_bytes())


def _absolute(loaded: LoadedSpec, uri: str) -> str:
    """A local path relative to the spec file, made absolute (services run elsewhere)."""
    if "://" in uri:
        return uri
    return str((loaded.base_dir / Path(uri).expanduser()).resolve())


def _mapped_options(spec: DeploymentSpec) -> dict[str, str]:
    values: dict[str, Any] = {"min_replicas": spec.replicas, "max_replicas": spec.max_replicas}
    for kind in ("cpu", "memory"):
        quantity = getattr(spec.resources, kind, None) if spec.resources else None
        values[f"{kind}_request"] = quantity.request if quantity else None
        values[f"{kind}_limit"] = quantity.limit if quantity else None
    return {key: str(value) for key, value in values.items() if value is not None}


def plan(
    loaded: LoadedSpec,
    desired: Desired,
    current: Deployment | None,
    applied: AppliedSpec | None,
    current_keys_sha256: str | None = None,
) -> Plan:
    """Compare DESIRED with CURRENT (None: not deployed) and the spec APPLIED before it;
    CURRENT_KEYS_SHA256 is the digest of the key file the deployment uses now."""
    changes: list[Change] = []
    if current is None:  # what will run, where: the fields a new deployment starts from
        changes.append(Change(field="name", desired=desired.name, effect="switch"))
        if loaded.spec.model:  # an ensemble's members are in its config changes
            changes.append(Change(field="model", desired=desired.model.uri, effect="switch"))
        changes.append(Change(field="target.uri", desired=desired.target_uri, effect="switch"))
    else:
        changes += _replacements(desired, current)
        if desired.model != current.model:
            changes.append(
                Change(
                    field="model" if loaded.spec.model else "models.0.uri",
                    current=current.model.uri,
                    desired=desired.model.uri,
                    effect="switch",
                )
            )
    now = current.deploy_config if current else DeployConfig()
    changes += _config_changes(now, desired.config, current is not None)
    keys_rotated = desired.keys_sha256 and current_keys_sha256  # the same file, other keys
    if current is not None and keys_rotated and desired.keys_sha256 != current_keys_sha256:
        changes.append(
            Change(
                field="auth.keys",
                current="(the keys now)",
                desired="(the keys the secrets hold)",
                effect="switch",
            )
        )
    if (
        current is not None
        and desired.scoring_code_sha256 is not None
        and applied is not None
        and desired.config.scoring_code == now.scoring_code
        and applied.scoring_code_sha256 != desired.scoring_code_sha256
    ):
        changes.append(
            Change(
                field="scoring_code",
                current=f"sha256 {(applied.scoring_code_sha256 or '-')[:12]}",
                desired=f"sha256 {desired.scoring_code_sha256[:12]}",
                effect="switch",
            )
        )
    changes += _recorded_changes(loaded.spec, applied.spec if applied else None)
    return Plan(name=desired.name, action=_action(changes, current), changes=changes)


def _replacements(desired: Desired, current: Deployment) -> list[Change]:
    found = []
    if desired.target_uri != current.target_uri:
        found.append(("target.uri", current.target_uri, desired.target_uri))
    if desired.model_name != current.model_name:
        found.append(("model", current.model_name, desired.model_name))
    port, now = desired.config.port, current.config.get("port")
    if port is not None and now is not None and port != now:
        found.append(("target.port", now, port))
    return [Change(field=f, current=c, desired=d, effect="replace") for f, c, d in found]


def _config_changes(current: DeployConfig, desired: DeployConfig, exists: bool) -> list[Change]:
    now, want = _flat(_comparable(current)), _flat(_comparable(desired))
    changes = []
    for key in sorted(set(now) | set(want), key=_spec_field):
        if now.get(key) == want.get(key) or (key == "port" and exists):
            continue  # a port change is a replacement (above); an unset port keeps the current
        if not exists and want.get(key) is None:
            continue
        changes.append(
            Change(
                field=_spec_field(key), current=now.get(key), desired=want.get(key), effect="switch"
            )
        )
    return changes


def _comparable(config: DeployConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude={"ready_timeout", "drain_timeout"})
    if data.get("ensemble") is None:
        data.pop("ensemble", None)
    return data


def _spec_field(key: str) -> str:
    """The spec's name for a flattened DeployConfig key."""
    if key in _CONFIG_FIELDS:
        return _CONFIG_FIELDS[key]
    if key.startswith("options."):
        option = key.removeprefix("options.")
        return _OPTION_FIELDS.get(option, f"target.options.{option}")
    if key.startswith("ensemble.members."):
        index, _, part = key.removeprefix("ensemble.members.").partition(".")
        return f"models.{index}.{'uri' if part == 'model_uri' else part}"
    return key


def _recorded_changes(desired: DeploymentSpec, applied: DeploymentSpec | None) -> list[Change]:
    want = _flat({s: desired.model_dump(mode="json")[s] for s in RECORDED})
    now = _flat({s: applied.model_dump(mode="json")[s] for s in RECORDED}) if applied else {}
    return [
        Change(field=key, current=now.get(key), desired=want.get(key), effect="record")
        for key in sorted(set(now) | set(want))
        if now.get(key) != want.get(key) and not (applied is None and want.get(key) is None)
    ]


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c.0": 2}; empty dicts and None stay values."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= _flat(value, f"{prefix}{key}.")
        return out
    if isinstance(data, list) and data:
        out = {}
        for index, value in enumerate(data):
            out |= _flat(value, f"{prefix}{index}.")
        return out
    return {prefix.rstrip("."): None if data == {} else data}


def _action(changes: list[Change], current: Deployment | None) -> Action:
    effects = {change.effect for change in changes}
    if "replace" in effects:
        return "replace"
    if current is None:
        return "create"
    if "switch" in effects:
        return "update"
    return "record" if effects else "none"


def refuse_replacement(loaded: LoadedSpec, planned: Plan) -> None:
    """ConflictError (exit 4) at the first field that would need the deployment re-created."""
    for change in planned.changes:
        if change.effect == "replace":
            raise loaded.error(
                change.field,
                f"deployment '{planned.name}' has {change.current}, the spec {change.desired}; "
                f"an update cannot change it: undeploy it first (`mlops undeploy {planned.name}`)",
                ConflictError,
            )


def keys_in_use(current: Deployment | None) -> str | None:
    """The digest of the key file deployment CURRENT uses now (None: none, or unreadable)."""
    path = current.config.get("api_key_file") if current else None
    try:
        return digest(Path(path).read_bytes()) if path else None
    except OSError:
        return None


def plan_spec(loaded: LoadedSpec, target_uri: str) -> tuple[Plan, Desired]:
    """The plan of LOADED against the ledger now, and the desired state it was made from;
    TARGET_URI is the spec's target in canonical form (`Target.target_uri`)."""
    from mlops_pipeline import ledger
    from mlops_pipeline.spec.store import find_applied

    current = ledger.find_deployment(loaded.spec.name)
    desired = resolve(loaded, target_uri, current)
    applied = find_applied(loaded.spec.name) if current is not None else None
    return plan(loaded, desired, current, applied, keys_in_use(current)), desired


def write_key_file(name: str, keys: str) -> Path:
    """Write deployment NAME's key file (owner-only) unless it already holds KEYS; the scoring
    service re-reads it within a second, so a rotation needs no restart on the local target."""
    path = key_file_path(name)
    if path.is_file() and path.read_text(encoding="utf-8") == keys:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.touch(mode=0o600)
    partial.chmod(0o600)
    partial.write_text(keys, encoding="utf-8")
    partial.replace(path)  # readers see the old keys or the new ones, never half a file
    return path


class SpecResult(BaseModel):
    """What `mlops deploy --spec` did: the plan's action and changes, and the deployment after
    (None when nothing changed or only the recorded settings did)."""

    name: str
    action: Action
    changes: list[Change]
    source: str
    deployment: dict[str, Any] | None = None
