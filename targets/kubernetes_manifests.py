"""The `kubernetes:` target's settings and manifests: pure functions, no cluster, no Prefect.

The settings (kubernetes_settings: `MLOPS_K8S_<FIELD>`, per deployment `--option FIELD=VALUE`)
shape them. `manifests()` builds the objects a deployment NAME consists of, all labelled
`mlops.deployment=NAME` and `app.kubernetes.io/managed-by=mlops-pipeline`:

* Secret `NAME-api-keys` (only with `api_key_file`): the key file, mounted read-only at
  /run/mlops/api-keys; the service reads it through MLOPS_SERVING_API_KEY_FILE, so keys are
  never in the pod's environment.
* Secret `NAME-proxy`: the admin token of the pods' proxies (key `token`), mounted read-only
  (optional) at /run/mlops-proxy/ and read through MLOPS_SERVING_PROXY_TOKEN_FILE, so a
  rotated Secret reaches running pods once the kubelet refreshes the volume (no restart);
  without it the admin API is off. The target makes a random one when it first creates NAME.
* Deployment `NAME`: two containers per pod, both from the scoring image. `scoring` serves the
  model on 8081 (readiness on /ping, liveness on /health/live); `proxy` runs
  `python -m mlops_pipeline.serving.proxy` on 8080 (its admin API on 8082, in no Service)
  and forwards to it on 127.0.0.1 (the containers of a pod share one network namespace); its
  readiness is its own /-/proxy/ping
  (the pod is ready only when the scoring container is too), its liveness /health/live. The
  proxy is what lets a challenger take a share of live traffic (canary) or a copy of it
  (shadow) on every pod (kubernetes.py). Requests and limits, RollingUpdate with
  maxUnavailable 0, non-root security context, the model's name, version and URI as labels
  and annotations. It sets no `replicas`: the HPA owns them.
* Service `NAME`: port `service_port` -> the proxies' 8080 (`service_type`).
* HorizontalPodAutoscaler `NAME` (autoscaling/v2) and PodDisruptionBudget `NAME` (policy/v1).

While a live challenger runs (kubernetes.py), there are also a Deployment and a ClusterIP
Service `NAME-challenger` (the challenger's scoring container alone, port 8081, labelled
`mlops.challenger-of=NAME`; when the champion has an HPA and a PDB, the challenger gets its
own from the same settings, and starts with as many pods as the champion runs), and a
ConfigMap `NAME-routes` holding the proxies' current canary and shadow routes, which a proxy
reads at start (MLOPS_SERVING_PROXY_ROUTES): a pod the HPA or a restart adds splits traffic
as the others do.

Capture in the cluster: `capture_uri` set to an fsspec URI (s3://, gs://, abfs://, ...) is
passed to the service as it is (credentials come from the pod's identity or the service
account, or from the Secret `env_secret` names, whose keys become the scoring containers'
environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for an
S3-compatible store; the image needs the fsspec driver: s3fs, adlfs, gcsfs in the model's
requirements, or MLOPS_IMAGE_EXTRAS=s3);
with `capture_pvc` set, that PersistentVolumeClaim is mounted at /var/lib/mlops/capture and the
service writes there (no capture_uri with it). A local path means nothing inside a cluster and
is refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.images import IMAGE_MODEL_DIR
from mlops_pipeline.serving.settings import PROXY_ENV_PREFIX, env_name
from mlops_pipeline.targets.base import DeployConfig, ModelRef, serving_env
from mlops_pipeline.targets.kubernetes_settings import KubernetesSettings, settings_for

__all__ = ["KubernetesSettings", "manifests", "render_yaml", "settings_for"]

FIELD_MANAGER = "mlops-pipeline"
MANAGED_BY = {"app.kubernetes.io/managed-by": FIELD_MANAGER}
DEPLOYMENT_LABEL = "mlops.deployment"
MODEL_NAME_KEY = "mlops.model.name"
MODEL_VERSION_KEY = "mlops.model.version"
MODEL_URI_KEY = "mlops.model.uri"
IMAGE_KEY = "mlops.image"
CONFIG_KEY = "mlops.config"
SECRETS_DIR = "/run/mlops"
API_KEY_NAME = "api-keys"
CAPTURE_MOUNT = "/var/lib/mlops/capture"
SCORING_PRESTOP_MARGIN = 5  # s the scoring container outlasts its proxy sidecar's preStop
CHALLENGER_LABEL = "mlops.challenger-of"
CONTAINER = "scoring"
PROXY_CONTAINER = "proxy"
PROXY_PORT = 8080  # the pod's serving port (named http): the proxy
# the proxy's admin API (named admin): declared on the pod, in no Service; the controller
# reaches it through the API server's pod proxy
PROXY_ADMIN_PORT = 8082
# the proxy's admin token as a file: a Secret volume follows the Secret, an env var never does
PROXY_SECRETS_DIR = "/run/mlops-proxy"
PROXY_TOKEN_VOLUME = "proxy-token"
MODEL_PORT = 8081  # the scoring service's port (named model), behind the proxy
TOKEN_KEY = "token"
ROUTES_KEY = "routes"
READY_PATH = "/ping"
PROXY_PING_PATH = "/-/proxy/ping"
LIVE_PATH = "/health/live"
# the proxy sidecar's own share: it only relays bytes
PROXY_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}
# label values: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")


def secret_name(name: str) -> str:
    return f"{name}-api-keys"


def proxy_secret_name(name: str) -> str:
    """The Secret holding the admin token of NAME's proxies."""
    return f"{name}-proxy"


def challenger_name(name: str) -> str:
    """NAME's challenger Deployment and Service (also the DNS name the proxies reach it at)."""
    return f"{name}-challenger"


def routes_name(name: str) -> str:
    """The ConfigMap holding the routes NAME's proxies start with."""
    return f"{name}-routes"


def challenger_upstream(name: str) -> str:
    """The challenger's base URL as every proxy of NAME reaches it: its Service's DNS name."""
    return f"http://{challenger_name(name)}:{MODEL_PORT}"


def selector(name: str) -> dict[str, str]:
    """The pod selector of deployment NAME (immutable once created)."""
    return {DEPLOYMENT_LABEL: name}


def labels(name: str, model: ModelRef | None = None) -> dict[str, str]:
    """Labels of every object of NAME; model name/version too when they are valid label values
    (the annotations always carry them)."""
    result = {"app.kubernetes.io/name": name, **MANAGED_BY, **selector(name)}
    if model is not None:
        for key, value in ((MODEL_NAME_KEY, model.name), (MODEL_VERSION_KEY, model.version)):
            if _LABEL_VALUE.match(value):
                result[key] = value
    return result


def annotations(model: ModelRef, image: str, config: DeployConfig) -> dict[str, str]:
    """What get() reads back: the model, image and settings (a key file's path, never keys)."""
    return {
        MODEL_NAME_KEY: model.name,
        MODEL_VERSION_KEY: model.version,
        MODEL_URI_KEY: model.uri,
        IMAGE_KEY: image,
        CONFIG_KEY: config.model_dump_json(),
    }


def capture_target(config: DeployConfig, settings: KubernetesSettings) -> tuple[str | None, bool]:
    """(capture URI the service gets, whether the capture PVC is mounted).

    Raises:
        InvalidInputError: a local path, or a capture URI together with capture_pvc (exit 2).
    """
    uri = config.capture_uri
    if settings.capture_pvc:
        if uri:
            raise InvalidInputError(
                f"capture_uri {uri!r} (--capture-dir) and the capture_pvc option "
                f"{settings.capture_pvc!r} both say where to capture.",
                hint="Use one: an object-storage URI (--capture-dir s3://...), or a volume "
                "(--option capture_pvc=CLAIM_NAME) without --capture-dir.",
                field="capture_uri",
                value=uri,
            )
        return CAPTURE_MOUNT, True
    if uri and ("://" not in uri or uri.startswith("file://")):
        raise InvalidInputError(
            f"capture_uri {uri!r} is a local path; pods in a cluster cannot write to it.",
            hint="Use an fsspec URI (s3://bucket/capture, abfs://..., gs://...), or mount a "
            "volume with --option capture_pvc=CLAIM_NAME.",
            field="capture_uri",
            value=uri,
        )
    return uri, False


def _probe(path: str, port: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **timing}


READINESS = {"periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 2}
LIVENESS = {
    "initialDelaySeconds": 10,
    "periodSeconds": 10,
    "failureThreshold": 3,
    "timeoutSeconds": 3,
}
SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def proxy_container(name: str, model: ModelRef, image: str, pull_policy: str) -> dict[str, Any]:
    """The proxy sidecar of NAME's pods: the Service's port, forwarding to the scoring
    container on 127.0.0.1; its token is a file of the Secret's volume (proxy_token_volume),
    its start-up routes come from the ConfigMap (both optional: without the Secret the admin
    API is off, without the ConfigMap no route)."""
    plain = {
        "host": "0.0.0.0",
        "port": str(PROXY_PORT),
        "admin_port": str(PROXY_ADMIN_PORT),
        "upstream": f"http://127.0.0.1:{MODEL_PORT}",
        "version": model.version,
        "token_file": f"{PROXY_SECRETS_DIR}/{TOKEN_KEY}",
    }
    env: list[dict[str, Any]] = [
        {"name": env_name(field, PROXY_ENV_PREFIX), "value": value}
        for field, value in plain.items()
    ]
    env.append(
        {
            "name": env_name("routes", PROXY_ENV_PREFIX),
            "valueFrom": {
                "configMapKeyRef": {"name": routes_name(name), "key": ROUTES_KEY, "optional": True}
            },
        }
    )
    return {
        "name": PROXY_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["python", "-m", "mlops_pipeline.serving.proxy"],
        "ports": [
            {"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": PROXY_ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": env,
        # answered by the proxy itself, so a probe is never split to a canary nor counted;
        # the scoring container's probe gates the pod. Every image's proxy has this path,
        # so a rollback to an image built before the live challenger still becomes ready.
        "readinessProbe": _probe(PROXY_PING_PATH, "http", **READINESS),
        # answered by the proxy itself
        "livenessProbe": _probe(LIVE_PATH, "http", **LIVENESS),
        "resources": PROXY_RESOURCES,
        "securityContext": SECURITY,
        "volumeMounts": [
            {"name": PROXY_TOKEN_VOLUME, "mountPath": PROXY_SECRETS_DIR, "readOnly": True}
        ],
    }


def proxy_token_volume(name: str) -> dict[str, Any]:
    """The pod volume of the Secret `NAME-proxy`: optional (a pod starts without it, its
    admin API off), readable by the pod's group only."""
    return {
        "name": PROXY_TOKEN_VOLUME,
        "secret": {"secretName": proxy_secret_name(name), "optional": True, "defaultMode": 0o440},
    }


def deployment_manifest(
    name: str,
    namespace: str,
    model: ModelRef,
    config: DeployConfig,
    image: str,
    settings: KubernetesSettings,
    *,
    challenger: bool = False,
) -> dict[str, Any]:
    """The apps/v1 Deployment of NAME serving `model` from `image`: scoring container and
    proxy sidecar; with `challenger`, `NAME-challenger` with the scoring container alone and
    `settings.min_replicas` pods (challenger_manifests may size it otherwise)."""
    capture_uri, capture_volume = capture_target(config, settings)
    scoring = config.model_copy(update={"capture_uri": capture_uri, "api_key_file": None})
    env = serving_env(IMAGE_MODEL_DIR, model, scoring, host="0.0.0.0", port=MODEL_PORT, image=image)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if config.api_key_file:  # a challenger checks the champion's keys: the proxy passes them on
        env[env_name("api_key_file")] = f"{SECRETS_DIR}/{API_KEY_NAME}"
        volumes.append(
            {
                "name": "api-keys",
                "secret": {"secretName": secret_name(name), "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "api-keys", "mountPath": SECRETS_DIR, "readOnly": True})
    if capture_volume:
        volumes.append(
            {"name": "capture", "persistentVolumeClaim": {"claimName": settings.capture_pvc}}
        )
        mounts.append({"name": "capture", "mountPath": CAPTURE_MOUNT})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": "model", "containerPort": MODEL_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "readinessProbe": _probe(READY_PATH, "model", **READINESS),
        "livenessProbe": _probe(LIVE_PATH, "model", **LIVENESS),
        "resources": {
            "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
            "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
        },
        "securityContext": SECURITY,
        "volumeMounts": mounts,
    }
    if settings.env_secret:  # the challenger's too: it captures where the champion does
        container["envFrom"] = [{"secretRef": {"name": settings.env_secret}}]
    containers = [container]
    if not challenger:
        containers.append(proxy_container(name, model, image, settings.image_pull_policy))
        volumes.append(proxy_token_volume(name))
    # the kubelet runs every container's preStop at once, then signals each: the scoring
    # container waits a little longer, so the requests the proxy relays until its own SIGTERM
    # (over pooled keep-alive connections too) still find a server that accepts them
    margin = SCORING_PRESTOP_MARGIN if len(containers) > 1 else 0
    if settings.prestop_seconds:
        # keeps serving while Services drop the terminating pod; `sleep` as a lifecycle
        # action needs Kubernetes 1.30, and the image has python rather than a shell
        for each in containers:
            wait = settings.prestop_seconds + (margin if each is container else 0)
            sleep = f"import time; time.sleep({wait})"
            each["lifecycle"] = {"preStop": {"exec": {"command": ["python", "-c", sleep]}}}
    pod_spec: dict[str, Any] = {
        "containers": containers,
        "volumes": volumes,
        # preStop + the service's own graceful shutdown (MLOPS_SERVING_SHUTDOWN_TIMEOUT 20 s)
        "terminationGracePeriodSeconds": settings.prestop_seconds + margin + 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    own = challenger_name(name) if challenger else name
    pod_labels = labels(own, model) | ({CHALLENGER_LABEL: name} if challenger else {})
    meta = {
        "name": own,
        "namespace": namespace,
        "labels": pod_labels,
        "annotations": annotations(model, image, config),
    }
    spec: dict[str, Any] = {"replicas": settings.min_replicas} if challenger else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            **spec,
            "selector": {"matchLabels": selector(own)},
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
            "revisionHistoryLimit": 5,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        k: v for k, v in meta["annotations"].items() if k != CONFIG_KEY
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def manifests(
    name: str,
    namespace: str,
    model: ModelRef,
    config: DeployConfig,
    image: str,
    settings: KubernetesSettings,
    api_keys: str | None = None,
    proxy_token: str | None = None,
) -> list[dict[str, Any]]:
    """Every object of NAME in apply order: Secrets (API keys, proxy token: each when given),
    Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget.

    Args:
        api_keys: the key file's text; None leaves the Secret out (render() and
            deployments without keys).
        proxy_token: the proxies' admin token; None leaves its Secret out (render(), and an
            update, which keeps the one the pods run with).

    Raises:
        InvalidInputError: a capture setting pods cannot use.
    """
    meta = {"namespace": namespace, "labels": labels(name)}
    secrets = (
        (secret_name(name), API_KEY_NAME, api_keys),
        (proxy_secret_name(name), TOKEN_KEY, proxy_token),
    )
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, **meta},
            "type": "Opaque",
            "stringData": {key: value},
        }
        for secret, key, value in secrets
        if value is not None
    ]
    docs.append(deployment_manifest(name, namespace, model, config, image, settings))
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, **meta},
            "spec": {
                "type": settings.service_type,
                "selector": selector(name),
                "ports": [
                    {
                        "name": "http",
                        "port": settings.service_port,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )
    docs.append(autoscaler_manifest(name, meta, settings))
    docs.append(disruption_budget_manifest(name, meta, settings))
    return docs


def autoscaler_manifest(
    own: str, meta: dict[str, Any], settings: KubernetesSettings
) -> dict[str, Any]:
    """The autoscaling/v2 HorizontalPodAutoscaler of Deployment OWN (CPU utilisation)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": own, **meta},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": own},
            "minReplicas": settings.min_replicas,
            "maxReplicas": settings.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": settings.cpu_target_percent,
                        },
                    },
                }
            ],
        },
    }


def disruption_budget_manifest(
    own: str, meta: dict[str, Any], settings: KubernetesSettings
) -> dict[str, Any]:
    """The policy/v1 PodDisruptionBudget of Deployment OWN's pods."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": own, **meta},
        "spec": {
            "maxUnavailable": settings.pdb_max_unavailable,
            "selector": {"matchLabels": selector(own)},
        },
    }


def challenger_manifests(
    name: str,
    namespace: str,
    model: ModelRef,
    config: DeployConfig,
    image: str,
    settings: KubernetesSettings,
    *,
    replicas: int | None = None,
    autoscaled: bool = False,
    disruption_budget: bool = False,
) -> list[dict[str, Any]]:
    """NAME's challenger in apply order: its ClusterIP Service first (so its DNS name exists
    when the pods do), then its Deployment (the scoring container alone, `replicas` pods,
    default `settings.min_replicas`), then, as the champion has them, its own
    HorizontalPodAutoscaler (`autoscaled`) and PodDisruptionBudget (`disruption_budget`) from
    the same settings: at the last canary step it takes all of the traffic."""
    own = challenger_name(name)
    meta = {"namespace": namespace, "labels": labels(own) | {CHALLENGER_LABEL: name}}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": own, **meta},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(own),
            # the port is the container's: the upstream URL is the same through a ClusterIP
            # and straight to a pod
            "ports": [
                {"name": "model", "port": MODEL_PORT, "targetPort": "model", "protocol": "TCP"}
            ],
        },
    }
    deployment = deployment_manifest(
        name, namespace, model, config, image, settings, challenger=True
    )
    if replicas is not None:
        # applied once, at the start: afterwards its HPA (if any) owns the count
        deployment["spec"]["replicas"] = replicas
    docs = [service, deployment]
    if autoscaled:
        docs.append(autoscaler_manifest(own, meta, settings))
    if disruption_budget:
        docs.append(disruption_budget_manifest(own, meta, settings))
    return docs


def routes_manifest(name: str, namespace: str, routes: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap NAME's proxies read their start-up routes from (`routes`: canary, shadow,
    sticky_header as PUT /-/proxy/routes takes them)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": routes_name(name), "namespace": namespace, "labels": labels(name)},
        "data": {ROUTES_KEY: json.dumps(routes, sort_keys=True)},
    }


def render_yaml(
    name: str,
    namespace: str,
    model: ModelRef,
    config: DeployConfig,
    image: str,
    settings: KubernetesSettings,
) -> str:
    """The manifests as one YAML stream for `kubectl apply -f -`; keys never appear.

    With `api_key_file` the Secret is not rendered (its values would be the keys): a comment
    at the top gives the `kubectl create secret` command that makes it from the key file.
    """
    head = [
        f"# mlops-pipeline: deployment {name} of {model.uri} ({image}) in namespace {namespace}",
        "# apply with: kubectl apply --server-side --field-manager=mlops-pipeline -f -",
    ]
    if config.api_key_file:
        head += [
            f"# Secret {secret_name(name)} holds the API keys and is not printed; create it from "
            "the key file first:",
            f"#   kubectl -n {namespace} create secret generic {secret_name(name)} "
            f"--from-file={API_KEY_NAME}={config.api_key_file}",
        ]
    head += [
        f"# Secret {proxy_secret_name(name)} holds the pods' proxy admin token (for canary and "
        "shadow); without it the admin API is off:",
        f"#   kubectl -n {namespace} create secret generic {proxy_secret_name(name)} "
        f"--from-literal={TOKEN_KEY}=$(openssl rand -hex 32)",
    ]
    docs = manifests(name, namespace, model, config, image, settings)
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
    return "\n".join(head) + "\n---\n" + body


def config_from_annotations(found: dict[str, str]) -> dict[str, Any]:
    """The DeployConfig fields stored in a Deployment's annotations ({} when absent)."""
    try:
        return json.loads(found.get(CONFIG_KEY) or "{}")
    except ValueError:
        return {}
