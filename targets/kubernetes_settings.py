"""Settings of the `kubernetes:` target: environment defaults `MLOPS_K8S_<FIELD>`, overridden per
deployment by `DeployConfig.options` (`mlops deploy --option min_replicas=3`). The ledger keeps
the options with the deployment, so update and rollback reuse them."""

from __future__ import annotations

import re
import typing
from fractions import Fraction
from typing import Literal
from urllib.parse import urlsplit

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.images import IMAGE_REFERENCE, IMAGE_USER
from mlops_pipeline.targets.base import DeployConfig
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class KubernetesSettings(BaseSettings):
    """Defaults of the `kubernetes:` target (`MLOPS_K8S_<FIELD>`); per deployment, any field
    is overridden by `DeployConfig.options[field]`."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_K8S_", extra="forbid")

    kubeconfig: str | None = Field(
        default=None,
        description="Kubeconfig file; unset = $KUBECONFIG or ~/.kube/config, then in-cluster.",
    )
    min_replicas: int = Field(default=2, ge=1, description="HPA minimum (and starting) pods.")
    max_replicas: int = Field(default=5, ge=1, description="HPA maximum pods.")
    cpu_target_percent: int = Field(
        default=70, ge=1, le=1000, description="HPA target: average CPU use of the request."
    )
    cpu_request: str = Field(default="250m", description="Container CPU request.")
    cpu_limit: str = Field(default="1", description="Container CPU limit.")
    memory_request: str = Field(default="512Mi", description="Container memory request.")
    memory_limit: str = Field(default="1Gi", description="Container memory limit.")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="How the Service is exposed."
    )
    service_port: int = Field(default=80, ge=1, le=65535, description="The Service's port.")
    endpoint_url: str | None = Field(
        default=None,
        description="The URL clients use (an Ingress, a gateway); wins over what the Service "
        "reports. Without it: LoadBalancer ingress, else node_address + nodePort, else the "
        "in-cluster DNS name.",
    )
    node_address: str | None = Field(
        default=None, description="A node's address, for NodePort Services' endpoint URL."
    )
    progress_deadline_seconds: int = Field(
        default=600, ge=1, description="Deployment progressDeadlineSeconds."
    )
    pdb_max_unavailable: int = Field(
        default=1, ge=0, description="PodDisruptionBudget maxUnavailable (voluntary evictions)."
    )
    prestop_seconds: int = Field(
        default=5,
        ge=0,
        description="Seconds a terminating pod keeps serving while endpoints drop it.",
    )
    capture_pvc: str | None = Field(
        default=None, description="PersistentVolumeClaim mounted for capture (see module doc)."
    )
    env_secret: str | None = Field(
        default=None,
        description="A Secret in the namespace (yours, not the target's) whose keys become "
        "environment variables of the scoring containers, e.g. object-storage credentials and "
        "endpoint for capture (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    registry: str | None = Field(
        default=None,
        description="Registry (host[:port][/path]) the built image was pushed to; the pods run "
        "REGISTRY/mlops/<model>:<version>.",
    )
    image: str | None = Field(
        default=None, description="The image reference the pods run; wins over registry."
    )
    service_account: str | None = Field(default=None, description="Pods' service account.")
    run_as_user: int = Field(
        default=int(IMAGE_USER.split(":")[0]), ge=1, description="Non-root user id of the pods."
    )


# Kubernetes resource quantities (no exponent forms): 500m, 2, 0.5, 512Mi, 1G
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_SUFFIX = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    **{s: Fraction(1000**i) for i, s in enumerate(("k", "M", "G", "T", "P", "E"), start=1)},
    **{s: Fraction(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$")
# a Secret's name: a DNS subdomain (RFC 1123), at most 253 characters
_SECRET = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def quantity(text: str) -> Fraction | None:
    """A Kubernetes quantity's value (cores or bytes), None when TEXT is not one."""
    found = QUANTITY.match(text.strip())
    if found is None:
        return None
    return Fraction(found.group(1)) * _SUFFIX[found.group(2) or ""]


def image_for(settings: KubernetesSettings, built: str) -> str:
    """The image the pods run: the `image` option, else `registry`/BUILT, else BUILT as is."""
    if settings.image:
        return settings.image
    if settings.registry:
        return f"{settings.registry.rstrip('/')}/{built}"
    return built


def _expected(field: str) -> str:
    """What a value of FIELD looks like, for messages."""
    info = KubernetesSettings.model_fields[field]
    choices = [a for a in typing.get_args(info.annotation) if a is not type(None)]
    if typing.get_origin(info.annotation) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(info.annotation)))
    if choices and typing.get_origin(choices[0]) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(choices[0])))
    if info.annotation is int:
        low = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
        high = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
        if low is not None and high is not None:
            return f"a whole number from {low} to {high}"
        if low is not None:
            return f"a whole number of at least {low}"
        return "a whole number"
    return "text"


def _option_problems(settings: KubernetesSettings) -> list[tuple[str, str]]:
    """(field, sentence) for each value that is well typed but not usable."""
    problems: list[tuple[str, str]] = []
    parsed: dict[str, Fraction] = {}
    for field, kind, example in (
        ("cpu_request", "CPU", "500m or 2"),
        ("cpu_limit", "CPU", "500m or 2"),
        ("memory_request", "memory", "512Mi or 2Gi"),
        ("memory_limit", "memory", "512Mi or 2Gi"),
    ):
        value = getattr(settings, field)
        amount = quantity(value)
        if amount is None:
            problems.append(
                (
                    field,
                    f"Kubernetes option {field}={value!r} is not a {kind} quantity "
                    f"(e.g. {example}).",
                )
            )
        elif kind == "memory" and value.strip().endswith("m"):
            problems.append(
                (
                    field,
                    f"Kubernetes option {field}={value!r} is millibytes, not megabytes "
                    "(write Mi, e.g. 512Mi).",
                )
            )
        else:
            parsed[field] = amount
    for what in ("cpu", "memory"):
        request, limit = f"{what}_request", f"{what}_limit"
        if request in parsed and limit in parsed and parsed[request] > parsed[limit]:
            problems.append(
                (
                    request,
                    f"Kubernetes option {request}={getattr(settings, request)!r} is above "
                    f"{limit}={getattr(settings, limit)!r} (a request must not exceed its limit).",
                )
            )
    if settings.max_replicas < settings.min_replicas:
        problems.append(
            (
                "max_replicas",
                f"Kubernetes option max_replicas={settings.max_replicas} is below "
                f"min_replicas={settings.min_replicas} (raise max_replicas or lower min_replicas).",
            )
        )
    if settings.endpoint_url is not None:
        parts = urlsplit(settings.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                (
                    "endpoint_url",
                    f"Kubernetes option endpoint_url={settings.endpoint_url!r} is "
                    "not an http(s) URL (e.g. https://iris.example.com).",
                )
            )
    if settings.node_address is not None:
        if not _HOST.match(settings.node_address):
            problems.append(
                (
                    "node_address",
                    f"Kubernetes option node_address={settings.node_address!r} is "
                    "not a host name or IP address (e.g. 10.0.0.4; no scheme or port).",
                )
            )
        elif settings.service_type == "ClusterIP":
            problems.append(
                (
                    "node_address",
                    f"Kubernetes option node_address={settings.node_address!r} "
                    "needs service_type=NodePort or LoadBalancer (a ClusterIP Service has no node "
                    "port).",
                )
            )
    if settings.registry is not None and not _REGISTRY.match(settings.registry.rstrip("/")):
        problems.append(
            (
                "registry",
                f"Kubernetes option registry={settings.registry!r} is not a registry "
                "(e.g. registry.example.com:5000 or myacr.azurecr.io/team).",
            )
        )
    if settings.env_secret is not None and not _SECRET.match(settings.env_secret):
        problems.append(
            (
                "env_secret",
                f"Kubernetes option env_secret={settings.env_secret!r} is not a Secret name "
                "(lowercase letters, digits, '-' and '.', e.g. capture-s3).",
            )
        )
    if settings.image is not None and not IMAGE_REFERENCE.match(settings.image):
        problems.append(
            (
                "image",
                f"Kubernetes option image={settings.image!r} is not an image reference "
                "(e.g. registry.example.com/mlops/iris:3).",
            )
        )
    return problems


def settings_for(config: DeployConfig) -> KubernetesSettings:
    """The environment's defaults overridden by the deployment's options.

    Raises:
        InvalidInputError: unknown option names, values of the wrong type or syntax (every
            bad option in one message, exit 2).
    """
    known = sorted(KubernetesSettings.model_fields)
    unknown = sorted(set(config.options) - set(known))
    if unknown:
        raise InvalidInputError(
            f"Unknown kubernetes option(s) {', '.join(unknown)}. Known options: "
            f"{', '.join(known)}.",
            hint="Pass options as --option KEY=VALUE with one of the known keys.",
            field=f"options.{unknown[0]}",
        )
    try:
        settings = KubernetesSettings(**config.options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(map(str, error["loc"]))
            if field in KubernetesSettings.model_fields:
                sentence = (
                    f"Kubernetes option {field}={error.get('input')!r} is not {_expected(field)}."
                )
            else:
                sentence = f"Kubernetes option {field}={error.get('input')!r}: {error['msg']}."
            problems.append((field, sentence))
        _refuse(problems, exc)
    _refuse(_option_problems(settings))
    return settings


def _refuse(problems: list[tuple[str, str]], cause: Exception | None = None) -> None:
    """Raise one InvalidInputError naming every problem (none: return)."""
    if not problems:
        return
    fields = [f for f, _ in problems]
    error = InvalidInputError(
        " ".join(sentence for _, sentence in problems),
        hint="Fix the option(s) with --option KEY=VALUE (defaults: MLOPS_K8S_<KEY>).",
        field=f"options.{fields[0]}",
    )
    if cause is not None:
        raise error from cause
    raise error
