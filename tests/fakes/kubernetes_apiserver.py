"""A STAND-IN for a Kubernetes API server, for tests: not Kubernetes, and not a conformance
implementation. It speaks the part of the REST API the `kubernetes:` target uses, over plain
HTTP on 127.0.0.1 with a bearer token, so the real `kubernetes` client (DynamicClient) talks to
it through a kubeconfig file:

* discovery: /version, /api, /apis, /api/v1, /apis/apps/v1, /apis/autoscaling/v2,
  /apis/policy/v1;
* Secrets, ConfigMaps, Services, Deployments, HorizontalPodAutoscalers,
  PodDisruptionBudgets: server-side apply (PATCH application/apply-patch+yaml, fieldManager
  required, a managedFields entry per manager), GET, LIST with label selectors (`k=v`,
  `k!=v`, `k`), DELETE (404 Status when missing); Pods: GET, LIST, pods/log (tailLines,
  container), and the pods/proxy subresource
  (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH`, PORT a number or a container port's
  name): the request goes on to that port of the pod, without the Authorization header
  (which the real API server consumes, as here), and its answer comes back as it is.
  Apply is simplified: the applied body is the object's whole desired state, except fields
  others own (spec.replicas set by the HPA, the allocated clusterIP and nodePort, the
  controller's annotations), which are kept. metadata.generation rises when the spec changes.
* a Deployment controller: pods per template hash, RollingUpdate with maxSurge and
  maxUnavailable, status (observedGeneration, replicas, updatedReplicas, readyReplicas,
  availableReplicas) and the Progressing condition, which turns to ProgressDeadlineExceeded
  after progressDeadlineSeconds without progress; an HPA only clamps replicas into
  [minReplicas, maxReplicas] (no metrics).
* each pod is REAL containers on the local Docker engine, one per container of the pod spec
  (image, command, env with `valueFrom` secretKeyRef/configMapKeyRef and `envFrom`
  secretRef/configMapRef resolved when the pod starts, `optional` honoured, user from the
  securityContext, secret and PVC volumes as bind mounts, CPU/memory limits; the image's
  HEALTHCHECK off, as the kubelet ignores it). A Secret volume is a host folder holding the
  Secret's keys as files (`optional`: the pod starts without the Secret), rewritten when the
  Secret is applied or deleted, as the kubelet's sync does (at once, where a kubelet takes up
  to a minute).
  Stand-in behaviour for the pod's one network namespace: the first container starts on the
  stand-in's own user-defined Docker network, and the others join its network stack
  (network_mode `container:<id>`), so they reach each other on 127.0.0.1; every containerPort
  of the pod is published on 127.0.0.1 from that first container. Each readiness probe is a
  real HTTP GET against its container's port, and a pod is ready when all its probed
  containers are. A deleted pod runs its containers' preStop execs (in parallel) and stays
  among its Services' endpoints (and reachable through pods/proxy) meanwhile, as endpoint
  updates lag in a cluster; then it leaves them and its containers get SIGTERM with the grace
  period, the first one (which holds the network namespace) last.
* in-cluster names, as stand-in behaviour: when a pod starts, its first container gets one
  network alias per Service (of any type) whose selector matches the pod, so other pods
  resolve a Service's name through Docker's embedded DNS to the pods it selects. There is no
  virtual IP and no port mapping (a Service's port must equal its target port for in-cluster
  clients); a Service applied after a pod started does not name that pod, nor does a
  terminating pod leave the name before its container stops. A deleted Service's name goes at
  once (its pods are reconnected to the network without that alias).
* a NodePort/LoadBalancer Service is an HTTP forwarder on 127.0.0.1:<nodePort> that sends
  each request to the next ready pod (per request, where kube-proxy balances connections);
  LoadBalancer Services report 127.0.0.1 as their ingress.

Failure modes tests control: `fail_next(method, path_regex, status)` answers the next
matching request (pods/proxy calls included) with an error Status; an image that never
answers /ping keeps its pods unready, so the rollout hits its progress deadline;
`scale(namespace, deployment, replicas)` sets a Deployment's replicas as an HPA scaling it
does; `hold_pods(namespace, deployment, count)` keeps that many of the Deployment's next pods
unscheduled (Pending, no node, no IP, no container started) until `release_pods`;
`pod_proxy_put_delay` seconds delay every pods/proxy PUT (a slow pod, e.g. one draining);
`applied` holds every applied body, and `proxy_calls` records each pods/proxy call's
(method, pod, start, end) on time.monotonic().
As the real API server (pod ResourceLocation), pods/proxy to a pod with no IP yet answers 400
"address not allowed"; a pod gets its IP (and containerStatuses) at its first probe.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import logging
import math
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import docker
import docker.errors
import httpx
import yaml

logger = logging.getLogger(__name__)

RESOURCES = {  # (group/version path, plural) -> (kind, has generation)
    ("api/v1", "secrets"): ("Secret", False),
    ("api/v1", "configmaps"): ("ConfigMap", False),
    ("api/v1", "services"): ("Service", False),
    ("api/v1", "pods"): ("Pod", False),
    ("apis/apps/v1", "deployments"): ("Deployment", True),
    ("apis/autoscaling/v2", "horizontalpodautoscalers"): ("HorizontalPodAutoscaler", True),
    ("apis/policy/v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
}
GROUPS = {"apps": "v1", "autoscaling": "v2", "policy": "v1"}
LABEL = "mlops.standin"
POD_PROXY = re.compile(r"api/v1/namespaces/([^/]+)/pods/([^/:]+)(?::([^/]+))?/proxy(/.*)?")
# the real API server authenticates the caller and does not pass its credentials on
PROXY_DROP = {"authorization", "host", "connection", "content-length", "transfer-encoding"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }


def matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Label selector match for `k=v`, `k==v`, `k!=v` and `k` terms joined by commas."""
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.strip() not in labels:
            return False
    return True


def _quantity(value: str | None) -> float | None:
    if value is None:
        return None
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if str(value).endswith(suffix):
            return float(str(value)[: -len(suffix)]) * factor
    return float(value)


def _free_port(low: int = 30000, high: int = 32767) -> int:
    """A free port in the NodePort range, as the real allocator would give."""
    for port in secrets.SystemRandom().sample(range(low, high + 1), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in the NodePort range")


class PodRuntime:
    """The containers behind one pod (the first holds the network namespace and the published
    ports), and their readiness as the last real probes saw it.

    Args:
        containers: (container spec, Docker container) in the pod spec's order.
        host_ports: each containerPort of the pod -> its published port on 127.0.0.1.
    """

    def __init__(self, containers: list[tuple[dict, Any]], host_ports: dict[int, int]) -> None:
        self.containers, self.host_ports = containers, host_ports
        self.container = containers[0][1] if containers else None  # None: not started yet
        self.ready = False
        self.exited: int | None = None
        self.next_probe = 0.0
        self.terminating = False
        # terminating, but still among its Services' endpoints: endpoint updates lag, so
        # (as in a cluster) requests keep arriving while its preStop runs
        self.lagging = False

    def host_port(self, port: int | str) -> int | None:
        """The published port of a containerPort given by number or by name."""
        for spec, _ in self.containers:
            for each in spec.get("ports", []):
                if port in (each["containerPort"], each.get("name"), str(each["containerPort"])):
                    return self.host_ports.get(each["containerPort"])
        return None

    def by_name(self, name: str | None) -> Any:
        """The Docker container of the pod's container `name` (None: the first)."""
        for spec, container in self.containers:
            if name is None or spec["name"] == name:
                return container
        return None


class SecretMount:
    """A Secret volume of one pod: the Secret's keys as files in a host folder, which the
    pod's containers bind-mount read-only. `write` makes the folder hold a Secret's keys
    now, as the kubelet's periodic sync does (at once here, where a kubelet takes up to a
    minute); each file is replaced atomically, so a reader sees the old or the new value.

    Args:
        source: the volume's `secret` (secretName, optional, defaultMode).
        uid, gid: the files' owner (runAsUser, fsGroup), readable with defaultMode.
    """

    def __init__(
        self, namespace: str, pod: str, folder: Path, source: dict, uid: int, gid: int
    ) -> None:
        self.namespace, self.pod, self.folder = namespace, pod, folder
        self.source, self.uid, self.gid = source, uid, gid

    def write(self, secret: dict[str, Any] | None) -> None:
        """Files for `secret`'s keys, and no others. A deleted Secret (None) empties an
        optional volume; a required one keeps its last files (the kubelet cannot fetch it)."""
        if secret is None and not self.source.get("optional"):
            return
        data = {k: base64.b64decode(v) for k, v in ((secret or {}).get("data") or {}).items()}
        for key, value in data.items():
            staged = self.folder / f"..{key}.tmp"
            staged.write_bytes(value)
            staged.chmod(self.source.get("defaultMode", 0o644))
            shutil.chown(staged, self.uid, self.gid)
            staged.replace(self.folder / key)
        for stale in self.folder.iterdir():
            if stale.name not in data:
                stale.unlink()


class ServiceForwarder:
    """127.0.0.1:<nodePort> -> the next ready pod of the Service, one request at a time."""

    def __init__(self, server: StandInApiServer, namespace: str, name: str, port: int) -> None:
        standin, counter = server, itertools.count()
        client = httpx.Client(timeout=60.0)

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: tests read their own logs
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                backends = standin.endpoints(namespace, name)
                if not backends:
                    self._reply(503, b"stand-in Service: no ready endpoints", {})
                    return
                port = backends[next(counter) % len(backends)]
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in {"host", "connection", "content-length"}
                }
                try:
                    answer = client.request(
                        self.command,
                        f"http://127.0.0.1:{port}{self.path}",
                        headers=headers,
                        content=body,
                    )
                except httpx.HTTPError as exc:
                    self._reply(502, f"stand-in Service: {exc!r}".encode(), {})
                    return
                skip = {"content-length", "transfer-encoding", "connection", "content-encoding"}
                self._reply(
                    answer.status_code,
                    answer.content,
                    {k: v for k, v in answer.headers.items() if k.lower() not in skip},
                )

            def _reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Forward)
        self.httpd.daemon_threads = True
        self.client = client
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.close()


class StandInApiServer:
    """The stand-in: start(), kubeconfig(path), fail_next(...), stop() (removes containers).

    Args:
        docker_client: the engine pods run on.
        namespaces: namespaces that exist; others answer 404 as a real server does.
    """

    def __init__(self, docker_client: Any, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.docker = docker_client
        self.namespaces = set(namespaces)
        self.token = secrets.token_urlsafe(16)
        self.id = uuid.uuid4().hex[:8]
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name)
        self.pods: dict[tuple[str, str], PodRuntime] = {}
        self.forwarders: dict[tuple[str, str], ServiceForwarder] = {}
        self.progress: dict[tuple[str, str], tuple[str, float]] = {}  # template hash, last
        self.failures: list[tuple[str, re.Pattern[str], int]] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content type)
        self.applied: list[dict[str, Any]] = []  # every applied body, in order
        self.held: dict[tuple[str, str], int] = {}  # (namespace, deployment) -> pods to hold
        self.secret_mounts: list[SecretMount] = []  # of live pods: rewritten on Secret changes
        self.pod_proxy_put_delay = 0.0
        self.proxy_calls: list[tuple[str, str, float, float]] = []
        self.lock = threading.RLock()
        self.volumes = Path(tempfile.mkdtemp(prefix="k8s-standin-"))
        self.network_name = f"standin-{self.id}"
        self.network: Any = None
        self._stop = threading.Event()
        self._version = itertools.count(1)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> StandInApiServer:
        self.network = self.docker.networks.create(self.network_name, labels={LABEL: self.id})
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._control_loop, daemon=True, name="standin-ctl").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for forwarder in self.forwarders.values():
            forwarder.close()
        for container in self.docker.containers.list(
            all=True, filters={"label": f"{LABEL}={self.id}"}
        ):
            try:
                container.remove(force=True)
            except docker.errors.APIError:  # a pod's stop thread removes it meanwhile
                continue
        if self.network is not None:
            try:
                self.network.remove()
            except docker.errors.APIError:
                logger.warning("stand-in network %s not removed", self.network_name)
        shutil.rmtree(self.volumes, ignore_errors=True)

    def kubeconfig(self, path: Path, context: str = "stand-in") -> Path:
        """Write a kubeconfig whose context `context` points at this server."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
                    "users": [{"name": "stand-in", "user": {"token": self.token}}],
                    "contexts": [
                        {"name": context, "context": {"cluster": "stand-in", "user": "stand-in"}}
                    ],
                    "current-context": context,
                }
            )
        )
        return path

    def fail_next(self, method: str, path_regex: str, status: int) -> None:
        """Answer the next `method` request whose path matches with an error Status."""
        with self.lock:
            self.failures.append((method.upper(), re.compile(path_regex), status))

    def _injected(self, method: str, path: str) -> int | None:
        """The status of a `fail_next` failure matching this request (consumed), if any."""
        with self.lock:
            for failure in self.failures:
                if failure[0] == method and failure[1].search(path):
                    self.failures.remove(failure)
                    return failure[2]
        return None

    def hold_pods(self, namespace: str, deployment: str, count: int = 1) -> None:
        """Keep the Deployment's next `count` pods unscheduled (see the module docstring)."""
        with self.lock:
            self.held[(namespace, deployment)] = count

    def release_pods(self, namespace: str, deployment: str) -> list[str]:
        """Schedule and start the Deployment's held pods (their env resolved now, as the
        kubelet does); returns their names."""
        with self.lock:
            self.held.pop((namespace, deployment), None)
            waiting = [
                (pod, rt)
                for (ns, pod), rt in self.pods.items()
                if ns == namespace and not rt.containers and not rt.terminating
                and self._owner(ns, pod) == deployment
            ]  # fmt: skip
            for pod, rt in waiting:
                self._run_pod(namespace, pod, rt)
            return [pod for pod, _ in waiting]

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        """Set the Deployment's spec.replicas, as its HPA does through the scale subresource
        (still clamped into the HPA's range); the controller starts or stops pods."""
        with self.lock:
            found = self.objects[("Deployment", namespace, deployment)]
            found["spec"]["replicas"] = replicas

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found else None

    def containers(self, namespace: str, deployment: str, container: str | None = None) -> list:
        """The live Docker containers of a Deployment's pods: each pod's first container, or
        the one named `container`."""
        with self.lock:
            return [
                rt.by_name(container)
                for (ns, pod), rt in self.pods.items()
                if ns == namespace and self._owner(ns, pod) == deployment and not rt.terminating
            ]

    def pod_names(self, namespace: str, deployment: str) -> list[str]:
        """The live (not terminating) pods of a Deployment."""
        with self.lock:
            return [
                pod
                for (ns, pod), rt in self.pods.items()
                if ns == namespace and self._owner(ns, pod) == deployment and not rt.terminating
            ]

    def endpoints(self, namespace: str, service: str) -> list[int]:
        """Host ports of the ready, non-terminating pods the Service selects.

        Lock-free (the controller holds the lock while Docker starts a container), so a
        snapshot that changes underneath is simply read again."""
        while True:
            try:
                svc = self.objects.get(("Service", namespace, service))
                if svc is None:
                    return []
                chosen = ",".join(f"{k}={v}" for k, v in svc["spec"].get("selector", {}).items())
                target = svc["spec"]["ports"][0].get("targetPort", svc["spec"]["ports"][0]["port"])
                found = []
                for (ns, pod), rt in list(self.pods.items()):
                    obj = self.objects.get(("Pod", ns, pod))
                    serving = not rt.terminating or rt.lagging
                    live = ns == namespace and rt.ready and serving and obj
                    port = rt.host_port(target)
                    if live and port and matches(chosen, obj["metadata"]["labels"]):
                        found.append(port)
                return found
            except RuntimeError:  # dictionary changed size during iteration
                continue

    # --- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = "application/json"
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    code, answer = 401, _status(401, "Unauthorized", "Unauthorized")
                else:
                    found = POD_PROXY.fullmatch(urlsplit(self.path).path.strip("/"))
                    if found:
                        code, answer, kind = server.pod_proxy(
                            self.command,
                            self.path,
                            dict(self.headers.items()),
                            body,
                            *found.groups(),
                        )
                    else:
                        code, answer = server.handle(
                            self.command, self.path, self.headers.get("Content-Type", ""), body
                        )
                        if isinstance(answer, bytes):
                            kind = "text/plain"
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _serve

        return Handler

    def pod_proxy(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        body: bytes,
        namespace: str,
        pod: str,
        port: str | None,
        rest: str | None,
    ) -> tuple[int, Any, str]:
        """The pods/proxy subresource: (status, body, content type) of the pod's answer."""
        with self.lock:
            self.requests.append((method, urlsplit(raw_path).path, headers.get("Content-Type", "")))
            runtime = self.pods.get((namespace, pod))
            found = self.objects.get(("Pod", namespace, pod)) or {}
        injected = self._injected(method, urlsplit(raw_path).path)
        if injected:
            answer = _status(injected, "InternalError", "injected failure")
            return injected, answer, "application/json"
        if runtime is None:
            return 404, _status(404, "NotFound", f'pods "{pod}" not found'), "application/json"
        if not found.get("status", {}).get("podIP"):  # as the real server: no IP, no proxy
            return 400, _status(400, "BadRequest", "address not allowed"), "application/json"
        host_port = runtime.host_port(port) if port else next(iter(runtime.host_ports.values()))
        if host_port is None:  # a terminating pod is reached while its containers run
            message = f"pod {pod} has no port {port}"
            return 503, _status(503, "ServiceUnavailable", message), "application/json"
        query = urlsplit(raw_path).query
        url = f"http://127.0.0.1:{host_port}{rest or '/'}" + (f"?{query}" if query else "")
        sent = {k: v for k, v in headers.items() if k.lower() not in PROXY_DROP}
        start = time.monotonic()
        try:
            if method == "PUT":
                time.sleep(self.pod_proxy_put_delay)
            answer = httpx.request(method, url, headers=sent, content=body, timeout=120.0)
        except httpx.HTTPError as exc:
            return 503, _status(503, "ServiceUnavailable", repr(exc)), "application/json"
        finally:
            with self.lock:
                self.proxy_calls.append((method, pod, start, time.monotonic()))
        return answer.status_code, answer.content, answer.headers.get("content-type", "")

    def handle(self, method: str, raw_path: str, content_type: str, body: bytes) -> tuple:
        parts = urlsplit(raw_path)
        path, query = parts.path.strip("/"), parse_qs(parts.query)
        with self.lock:
            self.requests.append((method, parts.path, content_type))
        injected = self._injected(method, parts.path)
        if injected:
            return injected, _status(injected, "InternalError", "injected failure")
        discovery = self._discovery(path)
        if discovery is not None:
            return 200, discovery
        found = re.fullmatch(
            r"(api/v1|apis/[a-z.]+/v\d+)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(?:/(log))?",
            path,
        )
        if not found or (found[1], found[3]) not in RESOURCES:
            return 404, _status(404, "NotFound", f"the server could not find {path}")
        prefix, namespace, plural, name, sub = found.groups()
        kind = RESOURCES[(prefix, plural)][0]
        # as the real server: writes into a missing namespace fail, reads find nothing
        if namespace not in self.namespaces and method == "PATCH":
            return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found')
        with self.lock:
            if sub == "log" and method == "GET":
                return self._log(namespace, name, query)
            if sub is not None:
                return 404, _status(404, "NotFound", f"the server could not find {path}")
            if method == "GET" and name is None:
                selector = (query.get("labelSelector") or [None])[0]
                items = [
                    copy.deepcopy(o)
                    for (k, ns, _), o in sorted(self.objects.items())
                    if k == kind and ns == namespace and matches(selector, o["metadata"]["labels"])
                ]
                meta = {"resourceVersion": str(next(self._version))}
                return 200, {
                    "kind": f"{kind}List",
                    "apiVersion": prefix.removeprefix("api/").removeprefix("apis/"),
                    "metadata": meta,
                    "items": items,
                }
            key = (kind, namespace, name)
            if method == "GET":
                if key not in self.objects:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, self.objects[key]
            if method == "DELETE":
                if key not in self.objects:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                self._delete(key)
                return 200, _status(200, "", "deleted") | {"status": "Success"}
            if method == "PATCH" and kind != "Pod":
                return self._apply(key, content_type, query, body)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "version":
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0-standin"}
        if path == "api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path == "apis":
            groups = [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{group}/{v}", "version": v},
                }
                for group, v in GROUPS.items()
            ]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        listed = [(plural, spec) for (p, plural), spec in RESOURCES.items() if p == path]
        if not listed:
            return None
        resources = [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": True,
                "kind": kind,
                "verbs": ["get", "list", "patch", "delete"],
            }
            for plural, (kind, _) in listed
        ]
        if path == "api/v1":
            for sub in ("log", "proxy"):
                resources.append(
                    {"name": f"pods/{sub}", "namespaced": True, "kind": "Pod", "verbs": []}
                )
        group_version = path.removeprefix("api/").removeprefix("apis/")
        return {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}

    # --- objects ------------------------------------------------------------------------------

    def _apply(self, key, content_type, query, body) -> tuple[int, dict[str, Any]]:
        kind, namespace, name = key
        if content_type.split(";")[0] != "application/apply-patch+yaml":
            return 415, _status(415, "UnsupportedMediaType", f"{content_type} not supported")
        manager = (query.get("fieldManager") or [""])[0]
        if not manager:
            return 400, _status(400, "BadRequest", "fieldManager is required for apply patch")
        applied = yaml.safe_load(body)
        self.applied.append(copy.deepcopy(applied))
        if applied.get("kind") != kind or applied.get("metadata", {}).get("name") != name:
            return 400, _status(400, "BadRequest", "kind or name does not match the URL")
        existing = self.objects.get(key)
        obj = copy.deepcopy(applied)
        meta = obj["metadata"]
        meta.setdefault("labels", {})
        meta["namespace"] = namespace
        has_generation = dict(RESOURCES.values())[kind]
        if existing is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
            if has_generation:
                meta["generation"] = 1
            obj["status"] = {}
        else:
            old = existing["metadata"]
            meta.update(uid=old["uid"], creationTimestamp=old["creationTimestamp"])
            kept = {k: v for k, v in (old.get("annotations") or {}).items() if "kubernetes" in k}
            meta["annotations"] = {**kept, **(meta.get("annotations") or {})}
            obj["status"] = existing.get("status", {})
            problem = self._keep_others_fields(kind, existing, obj)
            if problem:
                return 422, _status(422, "Invalid", problem)
            if has_generation:
                changed = existing.get("spec") != obj.get("spec")
                meta["generation"] = old["generation"] + (1 if changed else 0)
        if kind == "Deployment":
            obj["spec"].setdefault("replicas", 1)
            template = obj["spec"]["template"]["metadata"].get("labels", {})
            wanted = obj["spec"]["selector"]["matchLabels"]
            if any(template.get(k) != v for k, v in wanted.items()):
                return 422, _status(422, "Invalid", "selector does not match template labels")
        if kind == "Service":
            self._allocate(obj)
        meta["resourceVersion"] = str(next(self._version))
        meta["managedFields"] = [
            {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": applied["apiVersion"],
                "time": _now(),
                "fieldsType": "FieldsV1",
            }
        ]
        if kind == "Secret":  # stringData is write-only: the server stores it as data
            data = {
                k: base64.b64encode(v.encode()).decode()
                for k, v in obj.pop("stringData", {}).items()
            }
            obj["data"] = {**obj.get("data", {}), **data}
        self.objects[key] = obj
        if kind == "Secret":
            self._sync_secret_mounts(namespace, name)
        exposed = kind == "Service" and obj["spec"].get("type") in ("NodePort", "LoadBalancer")
        if exposed and (namespace, name) not in self.forwarders:
            port = obj["spec"]["ports"][0]["nodePort"]
            self.forwarders[(namespace, name)] = ServiceForwarder(self, namespace, name, port)
        return (200 if existing else 201), copy.deepcopy(obj)

    @staticmethod
    def _keep_others_fields(kind: str, existing: dict, obj: dict) -> str | None:
        """Keep what other managers own; a changed immutable field is the error text."""
        if kind == "Deployment":
            if existing["spec"]["selector"] != obj["spec"]["selector"]:
                return "spec.selector: field is immutable"
            if "replicas" not in obj["spec"]:  # owned by the HPA
                obj["spec"]["replicas"] = existing["spec"].get("replicas", 1)
        if kind == "Service":
            obj["spec"]["clusterIP"] = existing["spec"]["clusterIP"]
            old_ports = {p["name"]: p for p in existing["spec"]["ports"]}
            for port in obj["spec"]["ports"]:
                if "nodePort" in old_ports.get(port.get("name"), {}):
                    port.setdefault("nodePort", old_ports[port["name"]]["nodePort"])
        return None

    def _allocate(self, service: dict[str, Any]) -> None:
        spec = service["spec"]
        spec.setdefault("clusterIP", f"10.96.{secrets.randbelow(250)}.{secrets.randbelow(250)}")
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            for port in spec["ports"]:
                port.setdefault("nodePort", _free_port())
        if spec.get("type") == "LoadBalancer":
            service["status"] = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}

    def _delete(self, key: tuple[str, str, str]) -> None:
        kind, namespace, name = key
        if kind == "Pod" and (namespace, name) in self.pods:
            self._terminate(namespace, name)  # listed, with deletionTimestamp, until it stopped
            return
        self.objects.pop(key)
        if kind == "Secret":
            self._sync_secret_mounts(namespace, name)
        if kind == "Service" and (namespace, name) in self.forwarders:
            self.forwarders.pop((namespace, name)).close()
        if kind == "Service":
            self._drop_alias(namespace, name)
        if kind == "Deployment":
            for ns, pod in list(self.pods):
                if ns == namespace and self._owner(ns, pod) == name:
                    self._terminate(ns, pod)

    def _sync_secret_mounts(self, namespace: str, secret: str) -> None:
        """Rewrite the volumes of Secret `secret` in live pods (the kubelet's sync); forget
        those of pods that are gone."""
        self.secret_mounts = [m for m in self.secret_mounts if (m.namespace, m.pod) in self.pods]
        found = self.objects.get(("Secret", namespace, secret))
        for mount in self.secret_mounts:
            if mount.namespace == namespace and mount.source["secretName"] == secret:
                mount.write(found)

    def _drop_alias(self, namespace: str, service: str) -> None:
        """A deleted Service's name resolves no more (its ClusterIP and DNS record go at
        once): each pod holding the alias is reconnected without it."""
        for (ns, _), rt in list(self.pods.items()):
            if ns != namespace or rt.container is None:  # None: not started, no alias yet
                continue
            try:
                rt.container.reload()
                attached = rt.container.attrs["NetworkSettings"]["Networks"][self.network_name]
                aliases = attached.get("Aliases") or []
                if service not in aliases:
                    continue
                kept = [a for a in aliases if a not in (service, rt.container.id[:12])]
                self.network.disconnect(rt.container, force=True)
                self.network.connect(rt.container, aliases=kept or None)
                rt.container.reload()
                for port in rt.host_ports:  # republished, possibly on another host port
                    rt.host_ports[port] = int(rt.container.ports[f"{port}/tcp"][0]["HostPort"])
            except (docker.errors.APIError, KeyError, IndexError, TypeError):
                logger.warning("stand-in: alias %s not removed from a pod", service)

    def _owner(self, namespace: str, pod: str) -> str | None:
        found = self.objects.get(("Pod", namespace, pod))
        return found["metadata"].get("annotations", {}).get("standin/owner") if found else None

    def _log(self, namespace: str, name: str, query: dict) -> tuple[int, Any]:
        runtime = self.pods.get((namespace, name))
        if runtime is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        tail = int((query.get("tailLines") or ["100"])[0])
        container = runtime.by_name((query.get("container") or [None])[0])
        if container is None:
            return 400, _status(400, "BadRequest", f"pod {name} has no such container")
        try:
            return 200, container.logs(tail=tail)
        except docker.errors.NotFound:
            return 200, b""

    # --- the controllers ----------------------------------------------------------------------

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self.lock:
                    deployments = [k for k in self.objects if k[0] == "Deployment"]
                for key in deployments:
                    self._reconcile(key)
                self._probe_pods()
            except Exception:  # a stand-in bug must show in the test log, not kill the loop
                logger.exception("stand-in controller failed")
            time.sleep(0.2)

    def _reconcile(self, key: tuple[str, str, str]) -> None:
        with self.lock:
            deployment = self.objects.get(key)
            if deployment is None:
                return
            _, namespace, name = key
            spec, status = deployment["spec"], deployment["status"]
            self._autoscale(namespace, name, spec)
            template_hash = hashlib.sha256(
                json.dumps(spec["template"], sort_keys=True).encode()
            ).hexdigest()[:10]
            last_hash, last_progress = self.progress.get((namespace, name), ("", time.time()))
            if last_hash != template_hash:
                last_progress = time.time()
            desired = spec["replicas"]
            rolling = spec.get("strategy", {}).get("rollingUpdate", {})
            surge = self._resolve(rolling.get("maxSurge", "25%"), desired, math.ceil)
            unavailable = self._resolve(rolling.get("maxUnavailable", "25%"), desired, math.floor)
            surge = surge or (0 if unavailable else 1)
            pods = [
                (pod, rt)
                for (ns, pod), rt in self.pods.items()
                if ns == namespace and self._owner(ns, pod) == name and not rt.terminating
            ]
            new = [(p, rt) for p, rt in pods if p.startswith(f"{name}-{template_hash}-")]
            old = [(p, rt) for p, rt in pods if (p, rt) not in new]
            ready = sum(rt.ready for _, rt in pods)
            progressed = False
            while len(new) < desired and len(pods) < desired + surge:
                pod = self._start_pod(namespace, name, template_hash, spec["template"])
                new.append(pod)
                pods.append(pod)
                progressed = True
            # unready old pods may always go; ready ones while enough others are ready
            for pod, rt in sorted(old, key=lambda p: p[1].ready):
                if rt.ready and ready - 1 < desired - unavailable:
                    break
                self._terminate(namespace, pod)
                pods.remove((pod, rt))
                ready -= rt.ready
                progressed = True
            for pod, rt in sorted(new, key=lambda p: p[1].ready)[: max(0, len(new) - desired)]:
                self._terminate(namespace, pod)
                pods.remove((pod, rt))
                new.remove((pod, rt))
            new_ready = sum(rt.ready for _, rt in new)
            if new_ready != status.get("updatedReadyReplicas", new_ready):
                progressed = True
            if progressed:
                last_progress = time.time()
            self.progress[(namespace, name)] = (template_hash, last_progress)
            complete = len(new) == desired == new_ready and not old
            deadline = spec.get("progressDeadlineSeconds", 600)
            if complete:
                condition = ("True", "NewReplicaSetAvailable", "has successfully progressed")
            elif time.time() - last_progress > deadline:
                condition = ("False", "ProgressDeadlineExceeded", "has timed out progressing")
            else:
                condition = ("True", "ReplicaSetUpdated", "is progressing")
            status.update(
                observedGeneration=deployment["metadata"]["generation"],
                replicas=len(pods),
                updatedReplicas=len(new),
                updatedReadyReplicas=new_ready,  # stand-in bookkeeping, not an API field
                readyReplicas=ready,
                availableReplicas=ready,
                unavailableReplicas=max(0, len(pods) - ready),
                conditions=[
                    {
                        "type": "Available",
                        "status": "True" if ready >= desired - unavailable else "False",
                        "reason": "MinimumReplicasAvailable",
                        "lastUpdateTime": _now(),
                    },
                    {
                        "type": "Progressing",
                        "status": condition[0],
                        "reason": condition[1],
                        "message": f'ReplicaSet "{name}-{template_hash}" {condition[2]}.',
                        "lastUpdateTime": _now(),
                    },
                ],
            )

    def _autoscale(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        for (kind, ns, _), hpa in self.objects.items():
            target = hpa.get("spec", {}).get("scaleTargetRef", {})
            if kind == "HorizontalPodAutoscaler" and ns == namespace and target["name"] == name:
                low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
                spec["replicas"] = min(max(spec["replicas"], low), high)
                hpa["status"] = {"currentReplicas": spec["replicas"]}

    @staticmethod
    def _resolve(value: int | str, desired: int, rounding: Any) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return int(rounding(desired * int(value[:-1]) / 100))
        return int(value)

    def _start_pod(self, namespace: str, owner: str, template_hash: str, template: dict) -> Any:
        pod = f"{owner}-{template_hash}-{secrets.token_hex(3)}"
        spec = copy.deepcopy(template["spec"])
        labels = {**template["metadata"].get("labels", {}), "pod-template-hash": template_hash}
        held = self.held.get((namespace, owner), 0) > 0
        if held:
            self.held[(namespace, owner)] -= 1
        unscheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        self.objects[("Pod", namespace, pod)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": namespace,
                "labels": labels,
                "annotations": {"standin/owner": owner},
                "creationTimestamp": _now(),
                "uid": str(uuid.uuid4()),
            },
            "spec": spec,
            "status": {"phase": "Pending", "conditions": [unscheduled] if held else []},
        }
        runtime = PodRuntime([], {})
        self.pods[(namespace, pod)] = runtime
        if not held:
            self._run_pod(namespace, pod, runtime)
        return pod, runtime

    def _run_pod(self, namespace: str, pod: str, runtime: PodRuntime) -> None:
        """Schedule pod `pod` and start its containers (the Pod object and `runtime` are
        removed when one does not start, as a pod that never runs)."""
        obj = self.objects[("Pod", namespace, pod)]
        spec, labels = obj["spec"], obj["metadata"]["labels"]
        spec["nodeName"] = "standin-node"
        obj["status"] = {"phase": "Pending"}
        security = spec.get("securityContext", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        ports = [p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])]
        started: list[tuple[dict, Any]] = []
        try:
            for index, container in enumerate(spec["containers"]):
                if index == 0:  # holds the pod's network namespace and its published ports
                    aliases = self._service_names(namespace, labels)
                    endpoint = self.docker.api.create_endpoint_config(aliases=aliases or None)
                    network = {
                        "network": self.network_name,
                        "networking_config": {self.network_name: endpoint},
                        "ports": {f"{port}/tcp": ("127.0.0.1", None) for port in ports},
                    }
                else:
                    network = {"network_mode": f"container:{started[0][1].id}"}
                created = self._run(namespace, pod, container, volumes, security, network)
                started.append((container, created))
        except BaseException:
            for _, created in started:
                created.remove(force=True)
            self.objects.pop(("Pod", namespace, pod), None)
            self.pods.pop((namespace, pod), None)
            raise
        first = started[0][1]
        first.reload()
        host_ports = {
            port: int(first.ports[f"{port}/tcp"][0]["HostPort"])
            for port in ports
            if first.ports.get(f"{port}/tcp")
        }
        runtime.containers, runtime.container = started, first
        runtime.host_ports.update(host_ports)

    def _service_names(self, namespace: str, labels: dict[str, str]) -> list[str]:
        """Names of the Services whose selector matches a pod with `labels`."""
        names = []
        for (kind, ns, name), obj in self.objects.items():
            chosen = obj.get("spec", {}).get("selector") if kind == "Service" else None
            if ns == namespace and chosen and all(labels.get(k) == v for k, v in chosen.items()):
                names.append(name)
        return sorted(names)

    def _env(self, namespace: str, container: dict) -> dict[str, str]:
        """A container's environment with `envFrom` Secrets and ConfigMaps (every key, after
        `prefix`) and `valueFrom` keys resolved now, as the kubelet does when it starts a
        container; `env` wins over `envFrom`; an optional missing one is left out.

        Raises:
            RuntimeError: a required Secret, ConfigMap or key is missing (the kubelet keeps
                such a pod in CreateContainerConfigError).
        """
        env = {}
        for source in container.get("envFrom", []):
            kind, ref = (
                ("Secret", source["secretRef"])
                if "secretRef" in source
                else ("ConfigMap", source["configMapRef"])
            )
            obj = self.objects.get((kind, namespace, ref["name"]))
            if obj is None:
                if not ref.get("optional"):
                    raise RuntimeError(f"{kind} {ref['name']} not found")
                continue
            for key, value in (obj.get("data") or {}).items():
                decoded = base64.b64decode(value).decode() if kind == "Secret" else value
                env[source.get("prefix", "") + key] = decoded
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            source = item.get("valueFrom", {})
            kind, ref = (
                ("Secret", source["secretKeyRef"])
                if "secretKeyRef" in source
                else ("ConfigMap", source["configMapKeyRef"])
            )
            obj = self.objects.get((kind, namespace, ref["name"])) or {}
            data = obj.get("data") or {}
            if ref["key"] in data:
                value = data[ref["key"]]
                env[item["name"]] = base64.b64decode(value).decode() if kind == "Secret" else value
            elif not ref.get("optional"):
                raise RuntimeError(f"{kind} {ref['name']} key {ref['key']} not found")
        return env

    def _run(
        self,
        namespace: str,
        pod: str,
        container: dict,
        volumes: dict[str, dict],
        security: dict,
        network: dict[str, Any],
    ) -> Any:
        """Start one container of a pod; `network` places it (see `_start_pod`)."""
        user = f"{security.get('runAsUser', 0)}:{security.get('runAsGroup', 0)}"
        mounts = {}
        for mount in container.get("volumeMounts", []):
            source = self._volume(namespace, pod, volumes[mount["name"]], security)
            mounts[str(source)] = {
                "bind": mount["mountPath"],
                "mode": "ro" if mount.get("readOnly") else "rw",
            }
        limits = container.get("resources", {}).get("limits", {})
        cpu, memory = _quantity(limits.get("cpu")), _quantity(limits.get("memory"))
        return self.docker.containers.run(
            container["image"],
            command=(container.get("command") or []) + (container.get("args") or []) or None,
            name=f"standin-{self.id}-{pod}-{container['name']}",
            detach=True,
            environment=self._env(namespace, container),
            user=user,
            volumes=mounts,
            labels={LABEL: self.id, f"{LABEL}.pod": pod},
            nano_cpus=int(cpu * 1e9) if cpu else None,
            mem_limit=int(memory) if memory else None,
            healthcheck={"test": ["NONE"]},  # the kubelet ignores an image's HEALTHCHECK
            **network,
        )

    def _volume(self, namespace: str, pod: str, volume: dict, security: dict) -> Path:
        uid, gid = security.get("runAsUser", 0), security.get("fsGroup", 0)
        if "secret" in volume:
            source = volume["secret"]
            secret = self.objects.get(("Secret", namespace, source["secretName"]))
            if secret is None and not source.get("optional"):
                # the kubelet keeps such a pod in ContainerCreating
                raise RuntimeError(f"secret {source['secretName']} not found")
            folder = self.volumes / pod / volume["name"]
            if folder.is_dir():  # another container of the pod mounts it too
                return folder
            folder.mkdir(parents=True)
            mount = SecretMount(namespace, pod, folder, source, uid, gid)
            mount.write(secret)
            self.secret_mounts.append(mount)
            return folder
        claim = self.volumes / "pvc" / volume["persistentVolumeClaim"]["claimName"]
        claim.mkdir(parents=True, exist_ok=True)
        shutil.chown(claim, uid, gid)
        return claim

    def _terminate(self, namespace: str, pod: str) -> None:
        """Leave the Service now; preStop, then SIGTERM with the grace period, on a thread."""
        runtime = self.pods.get((namespace, pod))
        if runtime is None or runtime.terminating:
            return
        runtime.terminating = runtime.lagging = True
        obj = self.objects[("Pod", namespace, pod)]
        obj["metadata"]["deletionTimestamp"] = _now()
        grace = obj["spec"].get("terminationGracePeriodSeconds", 30)

        def pre_stop(spec: dict, container: Any) -> None:
            hook = spec.get("lifecycle", {}).get("preStop", {}).get("exec")
            if hook and runtime.exited is None:
                container.exec_run(hook["command"])

        def stop() -> None:
            hooks = [
                threading.Thread(target=pre_stop, args=pair, daemon=True)
                for pair in runtime.containers
            ]
            try:
                for hook in hooks:
                    hook.start()
                for hook in hooks:
                    hook.join(grace)
                runtime.lagging = False  # the endpoints have caught up by now
                # the sidecars first: the first container holds their network namespace
                for _, container in reversed(runtime.containers):
                    container.stop(timeout=grace)
                for _, container in runtime.containers:
                    container.remove(force=True)
            except docker.errors.APIError:
                pass
            with self.lock:
                self.pods.pop((namespace, pod), None)
                self.objects.pop(("Pod", namespace, pod), None)

        threading.Thread(target=stop, daemon=True, name=f"stop-{pod}").start()

    def _probe_pods(self) -> None:
        """Real readiness probes (HTTP GET on each container's published port), each pod at
        its first probe's period; a pod is ready when every probed container answers 2xx."""
        with self.lock:
            pods = [(k, rt) for k, rt in self.pods.items() if not rt.terminating and rt.containers]
        for (namespace, pod), rt in pods:
            if time.monotonic() < rt.next_probe:
                continue
            probes = [spec.get("readinessProbe") or {} for spec, _ in rt.containers]
            rt.next_probe = time.monotonic() + (probes[0].get("periodSeconds", 10))
            for _, container in rt.containers:
                try:
                    container.reload()
                    if container.status == "exited":
                        rt.exited = container.attrs["State"].get("ExitCode")
                except docker.errors.NotFound:
                    rt.exited = -1
            ready = rt.exited is None
            for probe in probes:
                if not ready or not probe.get("httpGet"):
                    continue
                port = rt.host_port(probe["httpGet"]["port"])
                try:
                    url = f"http://127.0.0.1:{port}{probe['httpGet']['path']}"
                    ready = httpx.get(url, timeout=probe.get("timeoutSeconds", 1)).is_success
                except httpx.HTTPError:
                    ready = False
            with self.lock:
                rt.ready = ready and not rt.terminating
                obj = self.objects.get(("Pod", namespace, pod))
                if obj is not None:
                    waiting = {"reason": "CrashLoopBackOff"} if rt.exited is not None else None
                    obj["status"] = {
                        "phase": "Failed" if rt.exited is not None else "Running",
                        "podIP": "127.0.0.1",
                        "conditions": [{"type": "Ready", "status": str(rt.ready)}],
                        "containerStatuses": [
                            {
                                "name": spec["name"],
                                "ready": rt.ready,
                                "state": {"waiting": waiting} if waiting else {"running": {}},
                            }
                            for spec, _ in rt.containers
                        ],
                    }
