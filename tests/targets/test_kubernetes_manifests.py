"""The kubernetes: target without a cluster: URIs, settings, manifests validated offline against
the real schemas (kubernetes-validate, strict) for the oldest and newest versions we support,
and the dry-run YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from mlops_pipeline.errors import BackendUnavailableError, InvalidInputError
from mlops_pipeline.targets import operations
from mlops_pipeline.targets.base import DeployConfig, ModelRef, get_target, renderable_schemes
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.targets.kubernetes_manifests import manifests, settings_for
from mlops_pipeline.targets.kubernetes_status import RolloutFailed, endpoint_url, rollout_status

# autoscaling/v2 is GA from 1.23; 1.25 is the oldest schema kubernetes-validate ships
K8S_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
MODEL = ModelRef("iris", "3")
IMAGE = "registry.example.com/mlops/iris:3"


def validate_all(docs: list[dict]) -> list[str]:
    """Validate every document in strict mode for each supported version; returns kinds."""
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    return [doc["kind"] for doc in docs]


def test_uri_selects_namespace_and_context():
    target = get_target("kubernetes:/ml-prod?context=aks-west")
    assert isinstance(target, KubernetesTarget)
    assert (target.namespace, target.context) == ("ml-prod", "aks-west")
    assert target.target_uri == "kubernetes:/ml-prod?context=aks-west"
    assert get_target("kubernetes:/default").context is None
    assert KubernetesTarget.needs_image is True
    assert "kubernetes:" in renderable_schemes()
    for bad in ("kubernetes:", "kubernetes:/Prod", "kubernetes:/a/b", "kubernetes:/ns?ctx=x"):
        with pytest.raises(InvalidInputError, match="kubernetes:/<namespace>"):
            get_target(bad)


def test_every_manifest_validates_strictly_with_keys_and_a_capture_volume(tmp_path: Path):
    config = DeployConfig(
        api_key_file=str(tmp_path / "keys"),
        options={"capture_pvc": "iris-capture", "service_type": "LoadBalancer"},
    )
    docs = manifests("iris-prod", "ml", MODEL, config, IMAGE, settings_for(config), api_keys="k1\n")

    kinds = validate_all(docs)

    assert kinds == [
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    deployment = docs[1]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLOPS_SERVING_API_KEY_FILE"] == "/run/mlops/api-keys"
    assert env["MLOPS_SERVING_CAPTURE_URI"] == "/var/lib/mlops/capture"
    assert env["MLOPS_SERVING_MODEL_VERSION"] == "3"
    assert "k1" not in str(deployment)  # the keys live in the Secret only
    assert docs[0]["stringData"] == {"api-keys": "k1\n"}
    assert pod["volumes"] == [
        {"name": "api-keys", "secret": {"secretName": "iris-prod-api-keys", "defaultMode": 0o440}},
        {"name": "capture", "persistentVolumeClaim": {"claimName": "iris-capture"}},
        {
            "name": "proxy-token",
            "secret": {"secretName": "iris-prod-proxy", "optional": True, "defaultMode": 0o440},
        },
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    meta = deployment["metadata"]
    assert meta["labels"]["mlops.model.version"] == "3"
    assert meta["annotations"]["mlops.model.uri"] == "models:/iris/3"
    assert meta["annotations"]["mlops.image"] == IMAGE
    assert docs[2]["spec"]["type"] == "LoadBalancer"
    assert docs[3]["spec"]["minReplicas"] == 2 and docs[3]["spec"]["maxReplicas"] == 5


def test_environment_defaults_and_per_deployment_options(monkeypatch):
    monkeypatch.setenv("MLOPS_K8S_MAX_REPLICAS", "9")
    monkeypatch.setenv("MLOPS_K8S_CPU_TARGET_PERCENT", "55")
    config = DeployConfig(capture_uri="s3://bucket/capture", options={"min_replicas": "3"})

    docs = manifests("iris-prod", "ml", MODEL, config, IMAGE, settings_for(config))

    validate_all(docs)
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    env = {
        e["name"]: e["value"] for e in docs[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLOPS_SERVING_CAPTURE_URI"] == "s3://bucket/capture"  # fsspec: passed through
    assert "MLOPS_SERVING_API_KEY_FILE" not in env
    assert [d["kind"] for d in docs][0] == "Deployment"  # no keys, no Secret


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            DeployConfig(options={"replicas": "3", "foo": "1"}),
            r"^Unknown kubernetes option\(s\) foo, replicas\. Known options: capture_pvc, ",
        ),
        (
            DeployConfig(options={"min_replicas": "x"}),
            r"^Kubernetes option min_replicas='x' is not a whole number of at least 1\.",
        ),
        (
            DeployConfig(options={"service_type": "Ingress"}),
            "service_type='Ingress' is not one of ClusterIP, NodePort, LoadBalancer",
        ),
        (
            DeployConfig(options={"cpu_request": "lots"}),
            r"^Kubernetes option cpu_request='lots' is not a CPU quantity \(e\.g\. 500m or 2\)",
        ),
        (
            DeployConfig(options={"memory_limit": "big"}),
            r"memory_limit='big' is not a memory quantity \(e\.g\. 512Mi or 2Gi\)",
        ),
        (DeployConfig(options={"memory_request": "512m"}), "millibytes, not megabytes"),
        (
            DeployConfig(options={"cpu_request": "1500m", "cpu_limit": "1"}),
            "cpu_request='1500m' is above cpu_limit='1'",
        ),
        (
            DeployConfig(options={"memory_request": "2Gi", "memory_limit": "1500Mi"}),
            "memory_request='2Gi' is above memory_limit='1500Mi'",
        ),
        (
            DeployConfig(options={"endpoint_url": "iris.example.com"}),
            r"endpoint_url='iris.example.com' is not an http\(s\) URL",
        ),
        (
            DeployConfig(options={"endpoint_url": "ftp://iris.example.com"}),
            r"is not an http\(s\) URL",
        ),
        (
            DeployConfig(options={"node_address": "10.0.0.4"}),
            "node_address='10.0.0.4' needs service_type=NodePort or LoadBalancer",
        ),
        (
            DeployConfig(options={"node_address": "http://10.0.0.4", "service_type": "NodePort"}),
            "is not a host name or IP address",
        ),
        (DeployConfig(options={"registry": "https://reg.io"}), "registry='https://reg.io' is not"),
        (DeployConfig(options={"image": "Reg.io/Bad Image"}), "image='Reg.io/Bad Image' is not"),
        (
            DeployConfig(capture_uri="/data/capture", options={"capture_pvc": "claim"}),
            "both say where to capture",
        ),
        (DeployConfig(options={"min_replicas": "4", "max_replicas": "2"}), "is below"),
        (DeployConfig(capture_uri="/data/capture"), "is a local path"),
        (DeployConfig(port=8080), "Port 8080: the kubernetes target publishes no host port"),
        (
            DeployConfig(capture_uri="s3://b/c", options={"capture_pvc": "claim"}),
            "both say where to capture",
        ),
    ],
)
def test_bad_settings_are_invalid_input_naming_the_value(config, message):
    with pytest.raises(InvalidInputError, match=message):
        KubernetesTarget("kubernetes:/ml").render("iris-prod", MODEL, config, image=IMAGE)


def test_dry_run_yaml_applies_as_is_and_never_prints_keys(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("very-secret-key\n")
    config = DeployConfig(api_key_file=str(keys), options={"service_type": "NodePort"})

    text = KubernetesTarget("kubernetes:/ml-prod").render("iris-prod", MODEL, config, image=IMAGE)

    assert "very-secret-key" not in text
    assert (
        f"kubectl -n ml-prod create secret generic iris-prod-api-keys --from-file=api-keys={keys}"
        in text
    )
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert validate_all(docs) == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    assert {d["metadata"]["namespace"] for d in docs} == {"ml-prod"}
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    with pytest.raises(InvalidInputError, match="needs an image"):
        KubernetesTarget("kubernetes:/ml-prod").render("iris-prod", MODEL, config)


def test_rollout_status_follows_kubectl():
    def deployment(generation=2, observed=2, **status):
        return {
            "metadata": {"name": "iris", "generation": generation},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": observed, **status},
        }

    assert rollout_status(deployment(observed=1)) == (
        False,
        "waiting for the deployment spec update to be observed",
    )
    assert rollout_status(deployment(updatedReplicas=1, replicas=2))[1] == (
        "1 out of 2 new replicas have been updated"
    )
    assert rollout_status(deployment(updatedReplicas=2, replicas=3))[1] == (
        "1 old replicas are pending termination"
    )
    assert (
        rollout_status(deployment(updatedReplicas=2, replicas=2, availableReplicas=1))[1]
        == "1 of 2 updated replicas are available"
    )
    assert rollout_status(deployment(updatedReplicas=2, replicas=2, availableReplicas=2))[0]
    stuck = deployment(
        updatedReplicas=1,
        conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
    )
    with pytest.raises(RolloutFailed, match="exceeded its progress deadline"):
        rollout_status(stuck)


def test_endpoint_url_order():
    service = {
        "metadata": {"name": "iris"},
        "spec": {"ports": [{"port": 80, "nodePort": 31000}]},
        "status": {},
    }
    plain = settings_for(DeployConfig())
    assert endpoint_url(service, "ml", plain) == "http://iris.ml.svc.cluster.local:80"
    node = settings_for(
        DeployConfig(options={"node_address": "10.0.0.5", "service_type": "NodePort"})
    )
    assert endpoint_url(service, "ml", node) == "http://10.0.0.5:31000"
    balanced = {**service, "status": {"loadBalancer": {"ingress": [{"ip": "20.1.2.3"}]}}}
    assert endpoint_url(balanced, "ml", node) == "http://20.1.2.3:80"
    fixed = settings_for(DeployConfig(options={"endpoint_url": "https://iris.example.com/"}))
    assert endpoint_url(balanced, "ml", fixed) == "https://iris.example.com"


def test_without_the_client_library_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    target = KubernetesTarget("kubernetes:/ml")
    # an installation problem the user fixes: exit 2, as the iotedge target's missing extra
    with pytest.raises(InvalidInputError) as raised:
        target.list()
    assert raised.value.exit_code == 2
    assert "pip install 'mlops-pipeline[kubernetes]'" in (raised.value.hint or "")
    # rendering needs no client
    assert "kind: Deployment" in target.render("iris", MODEL, DeployConfig(), image=IMAGE)


def test_unknown_context_is_backend_unavailable_naming_it(monkeypatch, tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n"
        "contexts: [{name: real, context: {cluster: c, user: u}}]\ncurrent-context: real\n"
    )
    monkeypatch.setenv("MLOPS_K8S_KUBECONFIG", str(config))
    with pytest.raises(BackendUnavailableError, match="context 'nope'"):
        get_target("kubernetes:/ml?context=nope").list()


def test_deploy_dry_run_renders_the_registered_version_and_touches_nothing(
    registered_model, tmp_path: Path
):
    from mlops_pipeline import inuse, ledger
    from mlops_pipeline.tracking import connect

    keys = tmp_path / "keys"
    keys.write_text("k-123\n")

    rendered = operations.dry_run_deployment(
        "models:/iris@champion",
        "iris-prod",
        "kubernetes:/ml-prod?context=aks",
        api_key_file=str(keys),
        options={"min_replicas": "3"},
    )

    assert (rendered.image, rendered.model_uri) == ("mlops/iris:1", "models:/iris/1")
    assert rendered.target_uri == "kubernetes:/ml-prod?context=aks"
    assert "k-123" not in rendered.manifest
    docs = [d for d in yaml.safe_load_all(rendered.manifest) if d]
    validate_all(docs)
    assert docs[2]["spec"]["minReplicas"] == 3
    assert ledger.find_deployment("iris-prod") is None
    assert inuse.deployments_using(connect(), "iris", "1") == {}


def test_every_bad_option_is_reported_at_once():
    config = DeployConfig(
        options={"cpu_request": "lots", "memory_limit": "big", "endpoint_url": "nope"}
    )
    with pytest.raises(InvalidInputError) as raised:
        settings_for(config)
    message = raised.value.message
    assert "\n" not in message
    for part in ("cpu_request='lots'", "memory_limit='big'", "endpoint_url='nope'"):
        assert part in message
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    "options",
    [
        {"cpu_request": "0.5", "cpu_limit": "2", "memory_request": "1G", "memory_limit": "1Gi"},
        {"cpu_request": "500m", "cpu_limit": "500m", "memory_request": "128974848"},
        {"node_address": "10.0.0.4", "service_type": "NodePort"},
        {"endpoint_url": "https://iris.example.com/api", "registry": "localhost:5000"},
    ],
)
def test_good_option_values_pass_and_validate(options):
    config = DeployConfig(options=options)
    validate_all(manifests("iris", "ml", MODEL, config, IMAGE, settings_for(config)))


@pytest.mark.parametrize(
    ("options", "image"),
    [
        ({}, "mlops/iris:3"),
        ({"registry": "registry.example.com:5000"}, "registry.example.com:5000/mlops/iris:3"),
        ({"registry": "myacr.azurecr.io/team/"}, "myacr.azurecr.io/team/mlops/iris:3"),
        ({"image": "ghcr.io/org/iris:3", "registry": "ignored.io"}, "ghcr.io/org/iris:3"),
    ],
)
def test_registry_and_image_options_name_the_pulled_image(options, image):
    rendered = KubernetesTarget("kubernetes:/ml").render(
        "iris", MODEL, DeployConfig(options=options), image="mlops/iris:3"
    )
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert deployment["metadata"]["annotations"]["mlops.image"] == image
    assert f"({image})" in rendered.splitlines()[0]


def test_image_option_needs_no_built_image():
    config = DeployConfig(options={"image": "ghcr.io/org/iris:3"})
    rendered = KubernetesTarget("kubernetes:/ml").render("iris", MODEL, config, image=None)
    assert "image: ghcr.io/org/iris:3" in rendered
    with pytest.raises(InvalidInputError, match="--option registry=REGISTRY"):
        KubernetesTarget("kubernetes:/ml").render("iris", MODEL, DeployConfig(), image=None)


def test_deploy_dry_run_with_a_registry_renders_the_pushed_image(registered_model):
    rendered = operations.dry_run_deployment(
        "models:/iris@champion",
        "iris-prod",
        "kubernetes:/ml-prod",
        options={"registry": "registry.example.com"},
    )
    assert "image: registry.example.com/mlops/iris:1" in rendered.manifest


def test_preflight_refuses_bad_options_before_needing_the_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    target = KubernetesTarget("kubernetes:/ml")
    for config, message in (
        (DeployConfig(options={"cpu_request": "lots"}), "cpu_request='lots'"),
        (DeployConfig(port=8080), "Port 8080"),
        (DeployConfig(capture_uri="/data/capture"), "is a local path"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            target.preflight(config)
    # good options: then the client, whose absence is an installation problem (exit 2)
    with pytest.raises(InvalidInputError, match="Python client, which is not installed"):
        target.preflight(DeployConfig(options={"registry": "registry.example.com"}))


def test_pods_run_a_proxy_sidecar_and_the_challenger_objects_validate(tmp_path: Path):
    from mlops_pipeline.targets.kubernetes_manifests import (
        challenger_manifests,
        challenger_upstream,
        routes_manifest,
    )

    config = DeployConfig(api_key_file=str(tmp_path / "keys"), capture_uri="s3://b/capture")
    settings = settings_for(config)
    docs = manifests(
        "iris-prod", "ml", MODEL, config, IMAGE, settings, api_keys="k1\n", proxy_token="t0k"
    )
    routes = {"canary": {"upstream": challenger_upstream("iris-prod"), "percent": 10}}
    challenger = challenger_manifests(
        "iris-prod", "ml", ModelRef("iris", "4"), config, IMAGE, settings
    )

    kinds = validate_all([*docs, *challenger, routes_manifest("iris-prod", "ml", routes)])

    assert kinds[:3] == ["Secret", "Secret", "Deployment"]
    assert kinds[-3:] == ["Service", "Deployment", "ConfigMap"]
    assert docs[1]["metadata"]["name"] == "iris-prod-proxy"
    assert docs[1]["stringData"] == {"token": "t0k"}
    pod = docs[2]["spec"]["template"]["spec"]
    scoring, proxy = pod["containers"]
    assert (scoring["name"], proxy["name"]) == ("scoring", "proxy")
    assert scoring["ports"] == [{"name": "model", "containerPort": 8081, "protocol": "TCP"}]
    assert proxy["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "admin", "containerPort": 8082, "protocol": "TCP"},
    ]
    assert proxy["image"] == IMAGE
    assert proxy["command"] == ["python", "-m", "mlops_pipeline.serving.proxy"]
    env = {e["name"]: e for e in proxy["env"]}
    assert env["MLOPS_SERVING_PROXY_UPSTREAM"]["value"] == "http://127.0.0.1:8081"
    assert env["MLOPS_SERVING_PROXY_VERSION"]["value"] == "3"
    # the admin API on its own port, which the Service does not expose
    assert env["MLOPS_SERVING_PROXY_ADMIN_PORT"]["value"] == "8082"
    # the token as a file of the Secret's volume, which follows a rotated Secret; never env
    assert "MLOPS_SERVING_PROXY_TOKEN" not in env
    assert env["MLOPS_SERVING_PROXY_TOKEN_FILE"]["value"] == "/run/mlops-proxy/token"
    assert proxy["volumeMounts"] == [
        {"name": "proxy-token", "mountPath": "/run/mlops-proxy", "readOnly": True}
    ]
    assert pod["volumes"][-1] == {
        "name": "proxy-token",
        "secret": {"secretName": "iris-prod-proxy", "optional": True, "defaultMode": 0o440},
    }
    assert "secretKeyRef" not in str(docs[2])
    assert env["MLOPS_SERVING_PROXY_ROUTES"]["valueFrom"] == {
        "configMapKeyRef": {"name": "iris-prod-routes", "key": "routes", "optional": True}
    }
    assert "t0k" not in str(docs[2])  # the token lives in the Secret only
    # the proxy answers its own readiness (a probe is never split to a canary); the scoring
    # container's probe gates the pod
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/-/proxy/ping", "port": "http"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert scoring["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "model"}
    assert [p["targetPort"] for p in docs[3]["spec"]["ports"]] == ["http"]

    # the kubelet runs both preStops at once: the scoring container outlasts its proxy's, and
    # the grace period covers the longer one plus the service's own shutdown
    def prestop(container: dict) -> str:
        return container["lifecycle"]["preStop"]["exec"]["command"][-1]

    wait = settings.prestop_seconds
    assert prestop(proxy) == f"import time; time.sleep({wait})"
    assert prestop(scoring) == f"import time; time.sleep({wait + 5})"
    assert pod["terminationGracePeriodSeconds"] == wait + 5 + 30
    # the challenger: the scoring container alone, not selected by the champion's Service
    service, deployment = challenger
    assert service["metadata"]["name"] == deployment["metadata"]["name"] == "iris-prod-challenger"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8081
    template = deployment["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["scoring"]
    assert template["metadata"]["labels"]["mlops.deployment"] == "iris-prod-challenger"
    assert template["metadata"]["labels"]["mlops.challenger-of"] == "iris-prod"
    assert deployment["spec"]["replicas"] == settings.min_replicas
    assert prestop(template["spec"]["containers"][0]) == f"import time; time.sleep({wait})"
    assert template["spec"]["volumes"][0]["secret"]["secretName"] == "iris-prod-api-keys"
    challenger_env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
    assert challenger_env["MLOPS_SERVING_MODEL_VERSION"] == "4"
    assert challenger_env["MLOPS_SERVING_CAPTURE_URI"] == "s3://b/capture"
    assert challenger_upstream("iris-prod") == "http://iris-prod-challenger:8081"
    assert "proxy-token" not in str(template)  # no proxy, no token


def test_a_challenger_gets_its_own_hpa_and_pdb_sized_like_the_champion():
    from mlops_pipeline.targets.kubernetes import challenger_objects, delete_order
    from mlops_pipeline.targets.kubernetes_manifests import challenger_manifests

    config = DeployConfig(options={"min_replicas": "2", "max_replicas": "6"})
    settings = settings_for(config)
    challenger = ModelRef("iris", "4")

    sized = challenger_manifests(
        "iris-prod", "ml", challenger, config, IMAGE, settings,
        replicas=4, autoscaled=True, disruption_budget=True,
    )  # fmt: skip
    bare = challenger_manifests("iris-prod", "ml", challenger, config, IMAGE, settings)

    assert validate_all(sized) == [
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    _, deployment, hpa, pdb = sized
    assert deployment["spec"]["replicas"] == 4
    own = "iris-prod-challenger"
    assert {d["metadata"]["name"] for d in sized} == {own}
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": own,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert pdb["spec"] == {
        "maxUnavailable": settings.pdb_max_unavailable,
        "selector": {"matchLabels": {"mlops.deployment": own}},
    }
    for doc in sized:
        assert doc["metadata"]["labels"]["mlops.challenger-of"] == "iris-prod"
    # without them on the champion, none on the challenger; min_replicas pods
    assert [d["kind"] for d in bare] == ["Service", "Deployment"]
    assert bare[1]["spec"]["replicas"] == 2
    # every object is deleted: each kind and name applied is in delete_order, the
    # challenger's first
    champion = manifests(
        "iris-prod", "ml", MODEL, config, IMAGE, settings, api_keys="k", proxy_token="t"
    )
    applied = {(d["kind"], d["metadata"]["name"]) for d in [*champion, *sized]}
    applied.add(("ConfigMap", "iris-prod-routes"))
    order = delete_order("iris-prod")
    assert applied == set(order) and len(order) == len(applied)
    assert order[: len(challenger_objects("iris-prod"))] == challenger_objects("iris-prod")


def test_dry_run_names_the_proxy_token_secret_without_a_value():
    text = KubernetesTarget("kubernetes:/ml").render("iris", MODEL, DeployConfig(), image=IMAGE)
    assert "kubectl -n ml create secret generic iris-proxy --from-literal=token=" in text
    assert "kind: Secret" not in text


def test_env_secret_gives_both_versions_scoring_containers_its_keys_and_validates():
    from mlops_pipeline.targets.kubernetes_manifests import challenger_manifests

    config = DeployConfig(capture_uri="s3://b/capture", options={"env_secret": "capture-s3"})
    settings = settings_for(config)
    docs = manifests("iris-prod", "ml", MODEL, config, IMAGE, settings)
    challenger = challenger_manifests(
        "iris-prod", "ml", ModelRef("iris", "4"), config, IMAGE, settings
    )

    validate_all([*docs, *challenger])

    scoring, proxy = docs[0]["spec"]["template"]["spec"]["containers"]
    (shadow,) = challenger[1]["spec"]["template"]["spec"]["containers"]
    expected = [{"secretRef": {"name": "capture-s3"}}]
    # the containers that capture get the Secret's keys; the proxy writes nothing
    assert scoring["envFrom"] == shadow["envFrom"] == expected
    assert "envFrom" not in proxy
    assert "capture-s3" not in str(docs[0]["spec"]["template"]["spec"]["volumes"])
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == []  # not ours
    without = manifests(
        "iris-prod", "ml", MODEL, DeployConfig(), IMAGE, settings_for(DeployConfig())
    )
    assert "envFrom" not in without[0]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("secret", ["Capture_S3", "-s3", "s3-", "a" * 254])
def test_env_secret_must_be_a_secret_name(secret):
    with pytest.raises(InvalidInputError, match=f"env_secret='{secret}' is not a Secret name"):
        settings_for(DeployConfig(options={"env_secret": secret}))
