"""Deployment operations, Prefect-free: plan, create, switch, roll back and delete deployments,
and report their status.

Each change goes through the ledger (history + registry in-use tags) around the target call, in
an order that keeps the in-use guard true at every moment: the new version is tagged before it
starts serving and the old one is released only after traffic has left it.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from mlops_pipeline import ledger
from mlops_pipeline.errors import ConflictError, InvalidInputError, MLOpsError, NotFoundError
from mlops_pipeline.registry import get_model_version
from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    EnsembleConfig,
    EnsembleMember,
    ModelRef,
    Target,
    get_target,
    served_models,
    target_class,
    with_primary,
)
from mlops_pipeline.targets.base import parse_target_uri as split_target_uri
from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class DeploymentHealth(BaseModel):
    """What the stable endpoint answered: ready or not, the service's /version, or the error.

    Fields a target could not learn are left out of the JSON (as `mlops status --json` always
    did); targets may add fields of their own.
    """

    model_config = ConfigDict(extra="allow")

    endpoint_url: str | None = None
    ready: bool = False
    version: dict[str, Any] | None = None
    error: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unknown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class DeploymentStatusReport(Deployment):
    """A deployment as recorded, with the target's live status (`missing` when the target no
    longer runs it), its live endpoint and the endpoint's health: what `mlops status` shows."""

    status: DeploymentStatus | Literal["missing"]
    health: DeploymentHealth


def validate_deployment_name(name: str) -> str:
    """Deployment names become process, container and Kubernetes names: DNS labels.

    Returns NAME; raises InvalidInputError (exit 2) unless it is 1-63 lowercase letters,
    digits and '-', starting and ending with a letter or digit.
    """
    if not DEPLOYMENT_NAME.match(name):
        raise InvalidInputError(
            f"Deployment name '{name}' is not allowed.",
            hint="Use 1-63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit, e.g. iris-prod.",
            field="name",
            value=name,
        )
    return name


def target_needs_image(target_uri: str) -> bool:
    """Whether the target runs container images (so `deploy` builds one first).

    Raises InvalidInputError (exit 2) for a malformed or unknown target URI.
    """
    scheme, _ = split_target_uri(target_uri)
    return target_class(scheme).needs_image


def check_scoring_code(path: str) -> str:
    """The absolute path of a scoring module (a .py file defining init() and run(data)).

    Raises:
        InvalidInputError: the file does not exist or is not a .py file (exit 2).
    """
    from pathlib import Path

    code = Path(path).expanduser().resolve()
    if code.suffix != ".py" or not code.is_file():
        raise InvalidInputError(
            f"--scoring-code {path}: no such Python file.",
            hint="Pass a .py module that defines init() and run(data).",
            field="scoring_code",
            value=path,
        )
    return str(code)


def resolve_ensemble(
    ensemble: EnsembleConfig, scoring_code: str | None
) -> tuple[ModelRef, EnsembleConfig]:
    """Pin every member to its version; returns the primary (first) member and the ensemble
    with `models:/name/version` members, as the ledger records it.

    Raises:
        InvalidInputError: `custom` without scoring code, or a member named twice (exit 2).
        NotFoundError: a member model, version or alias does not exist (exit 3).
    """
    from mlops_pipeline.registry import resolve_model_uri

    if ensemble.combiner == "custom" and scoring_code is None:
        raise InvalidInputError(
            "The custom combiner needs --scoring-code with a combine(predictions) function.",
            hint="Pass --scoring-code module.py, or pick mean, weighted_mean or majority_vote.",
            field="combiner",
            value="custom",
        )
    refs = [resolve_model_uri(m.model_uri) for m in ensemble.members]
    if len(set(refs)) != len(refs):
        raise InvalidInputError(
            f"An ensemble member is named twice ({', '.join(r.uri for r in refs)}).",
            hint="List each model version once; use a weight to count one more.",
            field="members",
        )
    members = [
        EnsembleMember(model_uri=ref.uri, weight=m.weight)
        for ref, m in zip(refs, ensemble.members, strict=True)
    ]
    return refs[0], EnsembleConfig(members=members, combiner=ensemble.combiner)


def plan_deployment(
    name: str, model: ModelRef, target_uri: str, port: int | None = None
) -> Literal["create", "update"]:
    """`create` for a new name; `update` when NAME already serves this model on this target.

    Raises:
        ConflictError: NAME serves another model, runs on another target, or listens on
            another port than `port` (exit 4).
    """
    existing = ledger.find_deployment(name)
    if existing is None:
        return "create"
    if existing.model_name != model.name:
        raise ConflictError(
            f"Deployment '{name}' already serves model '{existing.model_name}' "
            f"(version {existing.model_version}), not '{model.name}'.",
            hint=f"Choose another --name, or undeploy it first with `mlops undeploy {name}`.",
            deployment=name,
        )
    requested = get_target(target_uri).target_uri
    if existing.target_uri != requested:
        raise ConflictError(
            f"Deployment '{name}' runs on {existing.target_uri}, not {requested}.",
            hint=f"Choose another --name, or undeploy it first with `mlops undeploy {name}`.",
            deployment=name,
        )
    current_port = existing.config.get("port")
    if port is not None and current_port is not None and port != current_port:
        raise ConflictError(
            f"Deployment '{name}' already listens on port {current_port}; an update cannot "
            f"move it to {port}.",
            hint="Drop --port to update it in place, or undeploy it first.",
            deployment=name,
        )
    return "update"


def preflight_target(target_uri: str, config: DeployConfig | None = None) -> None:
    """The target's own quick checks (`Target.preflight`) before anything slow or lasting.

    Raises:
        What the target raises: InvalidInputError (exit 2), BackendUnavailableError (6), ...
    """
    get_target(target_uri).preflight(config or DeployConfig())


def deploy_config(values: dict[str, Any]) -> DeployConfig:
    """`values` (DeployConfig fields) validated as a DeployConfig.

    Raises:
        InvalidInputError: a field out of range or unknown (names the field and value; exit 2).
    """
    try:
        return DeployConfig.model_validate(values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(map(str, problem["loc"]))
        raise InvalidInputError(
            f"Deployment setting {field}={problem.get('input')!r} is invalid: {problem['msg']}.",
            field=field,
        ) from exc


class RenderedDeployment(BaseModel):
    """What `deploy --dry-run` prints: the target's manifest text and what it was made from."""

    name: str
    target_uri: str
    model_uri: str
    image: str | None
    manifest: str


def dry_run_deployment(
    model_uri: str, name: str, target_uri: str, **settings: Any
) -> RenderedDeployment:
    """What deploying MODEL_URI as NAME on the target would apply, as text; changes nothing.

    No image is built (an image target renders the tag `build-image` would give, with the
    digest of the scoring code and ensemble it would bake in), and neither the ledger nor the
    registry's in-use tags are touched.

    Args:
        model_uri: `models:/NAME/VERSION`, `models:/NAME@ALIAS` or `models:/NAME/latest`.
        name: the deployment name.
        target_uri: e.g. `kubernetes:/prod` or `iotedge:/hub/device-1`.
        settings: DeployConfig fields (port, capture_uri, options, ...).

    Raises:
        InvalidInputError: a bad name, URI or setting, or a target that renders no manifest
            (exit 2).
        NotFoundError: the model version does not exist (exit 3).
    """
    from mlops_pipeline.images.build import image_tag
    from mlops_pipeline.registry import resolve_model_uri
    from mlops_pipeline.tracking import connect

    validate_deployment_name(name)
    target = get_target(target_uri)
    config = deploy_config(settings)
    connect()
    model = resolve_model_uri(model_uri)
    if config.ensemble is not None:  # pinned as deploy pins them; the first is MODEL_URI
        model, ensemble = resolve_ensemble(config.ensemble, config.scoring_code)
        config = config.model_copy(update={"ensemble": ensemble})
    image = image_tag(model, config.scoring_code, config.ensemble) if target.needs_image else None
    return RenderedDeployment(
        name=name,
        target_uri=target.target_uri,
        model_uri=model.uri,
        image=image,
        manifest=target.render(name, model, config, image=image),
    )


def create_deployment(
    name: str,
    model: ModelRef,
    target_uri: str,
    config: DeployConfig,
    image: str | None = None,
) -> Deployment:
    """Start a new deployment and record it; on failure nothing is left running or tagged.

    The version is tagged in use before it starts serving; the event (succeeded or failed)
    goes to the ledger's history either way.

    Raises:
        Whatever the target raises (ConflictError, DeploymentError, BackendError, ...).
    """
    target = get_target(target_uri)
    event = {"target_uri": target.target_uri, "model_name": model.name, "image": image}
    models = served_models(model, config)
    for served in models:  # every ensemble member is protected before it serves
        ledger.mark_in_use(name, served, target.target_uri)
    try:
        logger.info("Deploying %s as '%s' on %s", model.uri, name, target.target_uri)
        deployment = target.create(name, model, config, image=image)
        try:
            deployment = ledger.upsert_deployment(deployment)
        except MLOpsError:
            target.delete(name)
            raise
    except BaseException as exc:  # also Ctrl-C and bugs: never leave a stale tag behind
        for served in models:
            ledger.release_in_use(name, served)
        ledger.record_event(
            name, "create", "failed", to_version=model.version, reason=str(exc), **event
        )
        raise
    ledger.record_event(
        name,
        "create",
        "succeeded",
        to_version=model.version,
        config=deployment.deploy_config,
        **event,
    )
    logger.info("Deployment '%s' is ready at %s", name, deployment.endpoint_url)
    return deployment


def check_no_challenger(
    name: str, action: str, clash: str = "would switch its champion under it"
) -> None:
    """Refuse to change NAME's champion while a live challenger (a canary's or a shadow's)
    runs beside it: the switch would happen under the running rollout, which then judges,
    promotes or stops against a champion it did not start with. `mlops undeploy` is not
    refused: it removes the challenger too. A canary or a shadow checks it before its image
    build, with `clash` saying why it cannot start (one challenger at a time).

    The target's health says whether one runs (it adds the proxy's `routes` then); a target
    without live challengers is never refused, nor one that no longer runs NAME (the action
    reports that itself).

    Raises:
        NotFoundError: no deployment NAME (exit 3).
        ConflictError: a challenger runs (exit 4); the message names it and what to do.
    """
    current = ledger.get_deployment(name)
    target = get_target(current.target_uri)
    if type(target).start_challenger is Target.start_challenger:
        return
    try:
        health = target.health(name)
    except NotFoundError:
        return
    if "routes" not in health:
        return
    routes = health["routes"] or {}
    running = [
        f"version {route.get('version') or '?'} as a {kind} at {route.get('percent', 0):g} %"
        for kind in ("canary", "shadow")
        if (route := routes.get(kind))
    ]
    what = " and ".join(running) or "one starting or stopping, no traffic yet"
    raise ConflictError(
        f"Deployment '{name}' runs a live challenger ({what}); {action} {clash}.",
        hint=f"Wait for the running `mlops canary`/`mlops shadow {name}` (or `mlops redeploy "
        "--live-gate`) to end, or stop it with Ctrl+C or SIGTERM (traffic goes back to the "
        f"champion, the challenger stops); `mlops undeploy {name}` removes both.",
        deployment=name,
        action=action,
    )


def switch_deployment(
    name: str,
    model: ModelRef,
    config: DeployConfig | None = None,
    image: str | None = None,
    action: Literal["update", "rollback"] = "update",
    reason: str | None = None,
) -> Deployment:
    """Switch NAME to `model` with zero downtime; on failure the old version keeps serving.

    Args:
        name: the deployment.
        model: the version to serve (of the model NAME already serves).
        config: new settings, or None to keep the recorded ones.
        image: the image for image-based targets.
        action: what the history records ("update" or "rollback").
        reason: free text for the history.

    Raises:
        NotFoundError: no deployment NAME (exit 3).
        ConflictError: `model` is of another model, or a live challenger runs (exit 4).
        Whatever the target raises while switching.
    """
    current = ledger.get_deployment(name)
    check_no_challenger(name, action)
    if current.model_name != model.name:
        raise ConflictError(
            f"Deployment '{name}' serves model '{current.model_name}'; it cannot switch to "
            f"'{model.name}'.",
            hint=f"Deploy '{model.name}' under another --name.",
            deployment=name,
        )
    target = get_target(current.target_uri)
    config = with_primary(config or current.deploy_config, model)
    event = {
        "target_uri": current.target_uri,
        "model_name": model.name,
        "from_version": current.model_version,
        "to_version": model.version,
        "image": image,
    }
    models = served_models(model, config)
    for served in models:
        ledger.mark_in_use(name, served, current.target_uri)
    try:
        logger.info("%s '%s': version %s -> %s", action, name, current.model_version, model.version)
        deployment = target.update(name, model, config, image=image)
    except BaseException as exc:  # also Ctrl-C and bugs: never leave a stale tag behind
        for served in set(models) - set(current.models):
            ledger.release_in_use(name, served)
        ledger.record_event(name, action, "failed", reason=str(exc), **event)
        raise
    deployment = ledger.upsert_deployment(deployment)
    ledger.record_event(
        name, action, "succeeded", reason=reason, config=deployment.deploy_config, **event
    )
    logger.info("Deployment '%s' now serves %s", name, model.uri)
    return deployment


def get_deployment(name: str) -> Deployment:
    """The ledger record of NAME (NotFoundError lists the known ones)."""
    return ledger.get_deployment(name)


def find_rollback_version(name: str) -> ledger.RollbackPoint:
    """The version (image, settings) NAME served before the current one; it must still exist.

    Raises:
        ConflictError: NAME has no earlier version (exit 4).
        NotFoundError: no deployment NAME, or its earlier version was deleted (exit 3).
    """
    ledger.get_deployment(name)
    point = ledger.rollback_point(name)
    if point is None:
        raise ConflictError(
            f"Deployment '{name}' has no earlier version to roll back to.",
            hint=f"See `mlops deployments history {name}`; use `mlops update {name} --model "
            "MODEL_URI` to pick a version.",
            deployment=name,
        )
    for model in point.models:  # an ensemble's members come back too
        try:
            get_model_version(model.name, version=model.version)
        except NotFoundError as exc:
            raise NotFoundError(
                f"Cannot roll back '{name}' to {point.model.uri}: {model.uri} no longer exists.",
                hint=f"Pick an existing one with `mlops update {name} --model MODEL_URI`.",
                deployment=name,
            ) from exc
    return point


def delete_deployment(name: str, reason: str | None = None) -> Deployment:
    """Stop NAME everywhere, forget it and release its model version; returns the record as
    it was, with status `stopped`.

    Raises:
        NotFoundError: no deployment NAME (exit 3).
        Whatever the target raises while stopping it (then NAME stays recorded).
    """
    current = ledger.get_deployment(name)
    event = {
        "target_uri": current.target_uri,
        "model_name": current.model_name,
        "from_version": current.model_version,
        "image": current.image,
    }
    try:
        get_target(current.target_uri).delete(name)
    except MLOpsError as exc:
        ledger.record_event(name, "delete", "failed", reason=str(exc), **event)
        raise
    ledger.delete_deployment(name)
    ledger.record_event(name, "delete", "succeeded", reason=reason, **event)
    logger.info("Deployment '%s' removed", name)
    return current.model_copy(update={"status": DeploymentStatus.STOPPED})


def get_logs(name: str, tail: int = 100) -> str:
    """The last `tail` lines of deployment NAME's scoring-service log, from its target (a local
    service's log file, the container's or the pod's log).

    Raises:
        NotFoundError: no deployment NAME in the ledger, or its target no longer runs it (exit 3).
        BackendError / BackendUnavailableError: the target could not be read (exit 5/6).
    """
    recorded = ledger.get_deployment(name)
    return get_target(recorded.target_uri).logs(name, tail)


def get_status(name: str) -> DeploymentStatusReport:
    """Ledger record of NAME plus the live status and health of its stable endpoint.

    Raises:
        NotFoundError: no deployment NAME in the ledger (exit 3).
    """
    recorded = ledger.get_deployment(name)
    target = get_target(recorded.target_uri)
    fields = recorded.model_dump(exclude={"status"})
    try:
        live = target.get(name)
    except NotFoundError:
        return DeploymentStatusReport(
            **fields,
            status="missing",
            health=DeploymentHealth(error=f"{recorded.target_uri} does not run it"),
        )
    fields["endpoint_url"] = live.endpoint_url
    return DeploymentStatusReport(
        **fields, status=live.status, health=DeploymentHealth.model_validate(target.health(name))
    )


def list_deployments(target_uri: str | None = None) -> list[dict[str, Any]]:
    """Every recorded deployment (optionally on one target URI), as JSON-able dicts."""
    return [d.model_dump(mode="json") for d in ledger.list_deployments(target_uri)]


def get_deployment_history(name: str) -> list[dict[str, Any]]:
    """All recorded events of NAME, oldest first, as JSON-able dicts."""
    return [event.model_dump(mode="json") for event in ledger.history(name)]


# --- live challengers (canary and shadow rollouts) ---------------------------------------------


def _challenger_target(name: str, model: ModelRef) -> tuple[Deployment, Any]:
    """NAME's record and target, after checking `model` may challenge it.

    Raises:
        NotFoundError: no deployment NAME (exit 3).
        ConflictError: `model` is of another model, or the version NAME serves (exit 4).
    """
    current = ledger.get_deployment(name)
    if current.model_name != model.name:
        raise ConflictError(
            f"Deployment '{name}' serves model '{current.model_name}'; --model {model.uri} is "
            f"a version of '{model.name}'.",
            hint=f"Pass a version of '{current.model_name}', e.g. models:/{current.model_name}/N.",
            deployment=name,
        )
    if current.model_version == model.version:
        raise ConflictError(
            f"Deployment '{name}' already serves {model.uri}; a challenger must be another "
            "version.",
            hint=f"Pass another version of '{model.name}'.",
            deployment=name,
        )
    return current, get_target(current.target_uri)


def start_challenger(name: str, model: ModelRef, image: str | None = None) -> str:
    """Start `model` as NAME's live challenger (no traffic yet) and return its upstream.

    The version is tagged in use first (so nobody deletes it while it serves), and released
    again when the target fails to start it.

    Raises:
        NotFoundError, ConflictError: see `_challenger_target`; ConflictError also when a
            challenger already runs. InvalidInputError: the target has no live challenger.
        DeploymentError: it did not become ready (nothing is left running).
    """
    current, target = _challenger_target(name, model)
    ledger.mark_in_use(name, model, current.target_uri)
    # the start (a model load, or a container or pod) takes up to a minute: say what runs
    logger.info(
        "starting challenger %s of '%s' on %s (champion v%s) ...",
        model.uri,
        name,
        current.target_uri,
        current.model_version,
    )
    try:
        upstream = target.start_challenger(name, model, current.deploy_config, image=image)
    except BaseException:
        ledger.release_in_use(name, model)
        raise
    logger.info("challenger %s of '%s' is ready at %s", model.uri, name, upstream)
    return upstream


def stop_challenger(name: str, model: ModelRef) -> None:
    """Stop NAME's challenger and release its in-use tag (idempotent; the served version keeps
    its tag)."""
    current = ledger.get_deployment(name)
    get_target(current.target_uri).stop_challenger(name)
    if current.model != model:
        ledger.release_in_use(name, model)


def promote_challenger(
    name: str, model: ModelRef, image: str | None = None, reason: str | None = None
) -> Deployment:
    """Make NAME's running challenger `model` its version with zero downtime, and record it
    as an `update` (so `mlops rollback` returns to the old version); the old version's in-use
    tag is released.

    Raises:
        ConflictError: no challenger runs; DeploymentError: the switch failed (the champion
            keeps serving; the failure is recorded).
    """
    current, target = _challenger_target(name, model)
    event = {
        "target_uri": current.target_uri,
        "model_name": model.name,
        "from_version": current.model_version,
        "to_version": model.version,
        "image": image,
    }
    try:
        target.promote_challenger(name)
        live = target.get(name)
    except BaseException as exc:
        ledger.record_event(name, "update", "failed", reason=str(exc)[:2000], **event)
        raise
    deployment = ledger.upsert_deployment(live.model_copy(update={"image": image or live.image}))
    ledger.record_event(
        name, "update", "succeeded", reason=reason, config=deployment.deploy_config, **event
    )
    logger.info("Deployment '%s' now serves %s (promoted challenger)", name, model.uri)
    return deployment


def record_rollout_rollback(name: str, model: ModelRef, reason: str) -> None:
    """Record in NAME's history that challenger `model` was rolled back (an `update` that
    failed: the version never became NAME's, so `mlops rollback` is unaffected)."""
    current = ledger.get_deployment(name)
    ledger.record_event(
        name,
        "update",
        "failed",
        target_uri=current.target_uri,
        model_name=model.name,
        from_version=current.model_version,
        to_version=model.version,
        reason=reason[:4000],
    )


def proxy_admin(name: str) -> Any:
    """NAME's proxy admin client (`rollout.admin.ProxyAdmin`, or one with its interface that
    reaches every replica's proxy); it holds the admin token, never log it.

    Raises:
        NotFoundError: no deployment NAME; InvalidInputError: its target has no proxy routes.
    """
    current = ledger.get_deployment(name)
    return get_target(current.target_uri).proxy_admin(name)
