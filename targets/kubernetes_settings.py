"""Settings of the `kubernetes:` target: environment defaults `MLOPS_K8S_<FIELD>`, overridden per
deployment by `DeployConfig.options` (`mlops deploy --option min_replicas=3`). The ledger keeps
the options with the deployment, so update and rollback reuse them."""

from __future__ import annotations

from typing import Literal

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.images import IMAGE_USER
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
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = Field(default=None, description="Pods' service account.")
    run_as_user: int = Field(
        default=int(IMAGE_USER.split(":")[0]), ge=1, description="Non-root user id of the pods."
    )


def settings_for(config: DeployConfig) -> KubernetesSettings:
    """The environment's defaults overridden by the deployment's options.

    Raises:
        InvalidInputError: an unknown option name or a value of the wrong type (exit 2).
    """
    try:
        settings = KubernetesSettings(**config.options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(map(str, problem["loc"]))
        known = ", ".join(sorted(KubernetesSettings.model_fields))
        raise InvalidInputError(
            f"Kubernetes option {field}={problem.get('input')!r} is invalid: {problem['msg']}.",
            hint=f"Options (--option KEY=VALUE): {known}.",
            field=f"options.{field}",
        ) from exc
    if settings.max_replicas < settings.min_replicas:
        raise InvalidInputError(
            f"Kubernetes option max_replicas={settings.max_replicas} is below "
            f"min_replicas={settings.min_replicas}.",
            hint="Raise max_replicas or lower min_replicas.",
            field="options.max_replicas",
        )
    return settings
