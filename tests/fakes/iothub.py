"""A local HTTPS **stand-in** for the Azure IoT Hub service REST endpoints the `azure-iot-hub`
SDK calls. It is not IoT Hub: no hub can be reached from the test machines, so the tests run the
real SDK (msrest + requests) against this server instead.

What it models (from the SDK's generated operations and their docstrings, api-version
2021-04-12; the hub's own behaviour beyond them is this file's assumption, marked as such):

* checks every request's `SharedAccessSignature` (HMAC-SHA256 of `sr` + "\\n" + `se` with the
  policy's key, policy name, expiry): a wrong key gets a real 401;
* `PUT/GET/DELETE /configurations/{id}`, `GET /configurations`: stores configurations; their
  content never changes (the SDK says so); a second PUT of an id without If-Match is a 409
  (assumed);
* `POST /devices/{id}/applyConfigurationContent`: sets the device's `$edgeAgent`, `$edgeHub`
  and module twins' desired properties from the content (404 for an unknown device);
* `GET /twins/{id}/modules/{mid}`: module twins (404 for an unknown device or module);
* `POST /devices/query`: only `SELECT * FROM devices.modules WHERE moduleId = '<id>'`;
* `POST /twins/{id}/modules/{mid}/methods`: 404 "device not online" (no device connects here;
  the error code is assumed).

What it does not do: evaluate target conditions or apply configurations to devices, run an
edge runtime, compute configuration metrics. Tests play edgeAgent with `report(...)`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

POLICY = "iothubowner"
MODULE_QUERY = re.compile(r"^SELECT \* FROM devices\.modules WHERE moduleId = '([^']+)'$")


@dataclass
class EdgeDevice:
    """One registered device: its module twins by module id ({"desired", "reported"})."""

    device_id: str
    edge: bool = True
    twins: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.edge:  # the hub creates both system module identities for edge devices
            for module in ("$edgeAgent", "$edgeHub"):
                self.twins.setdefault(module, {"desired": {}, "reported": {}})


@dataclass
class IoTHubStandIn:
    """The stand-in's state; `requests` keeps (method, path, body) of every authorised call."""

    host: str
    key: str
    devices: dict[str, EdgeDevice] = field(default_factory=dict)
    configurations: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def connection_string(self) -> str:
        return f"HostName={self.host};SharedAccessKeyName={POLICY};SharedAccessKey={self.key}"

    def add_device(self, device_id: str, *, edge: bool = True) -> EdgeDevice:
        with self.lock:
            device = self.devices[device_id] = EdgeDevice(device_id, edge=edge)
            return device

    def report(self, device_id: str, module_id: str, reported: dict[str, Any]) -> None:
        """Set a module twin's reported properties, as the device's module would."""
        with self.lock:
            twins = self.devices[device_id].twins
            twins.setdefault(module_id, {"desired": {}, "reported": {}})["reported"] = reported

    def desired(self, device_id: str, module_id: str) -> dict[str, Any]:
        return self.devices[device_id].twins[module_id]["desired"]

    # --- the REST endpoints -----------------------------------------------------------------

    def authorised(self, header: str) -> bool:
        """Whether HEADER is a valid, unexpired service SAS token for this hub and key."""
        if not header.startswith("SharedAccessSignature "):
            return False
        fields = dict(urllib.parse.parse_qsl(header.split(" ", 1)[1], keep_blank_values=True))
        try:
            resource, expiry = fields["sr"], int(fields["se"])
        except (KeyError, ValueError):
            return False
        message = f"{urllib.parse.quote_plus(resource)}\n{expiry}".encode()
        expected = base64.b64encode(
            hmac.new(base64.b64decode(self.key), message, hashlib.sha256).digest()
        ).decode()
        return (
            fields.get("skn") == POLICY
            and resource == self.host
            and expiry > time.time()
            and hmac.compare_digest(fields.get("sig", ""), expected)
        )

    def handle(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, Any, dict]:
        """One authorised request: (status, JSON body or None, extra headers)."""
        self.requests.append((method, path, body))
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        with self.lock:
            if parts[0] == "configurations":
                return self._configurations(method, parts[1:], headers, body)
            if parts[0] == "devices" and parts[1:] == ["query"] and method == "POST":
                return self._query(body)
            if (
                parts[0] == "devices"
                and len(parts) == 3
                and parts[2] == "applyConfigurationContent"
            ):
                return self._apply(parts[1], body)
            if (
                parts[0] == "twins"
                and len(parts) == 4
                and parts[2] == "modules"
                and method == "GET"
            ):
                return self._module_twin(parts[1], parts[3])
            if parts[0] == "twins" and len(parts) == 5 and parts[4] == "methods":
                return _error(404, "DeviceNotOnline", f"Device {parts[1]} is not online")
        return _error(404, "NotFound", f"{method} {path} is not served by the stand-in")

    def _configurations(self, method: str, rest: list[str], headers: Any, body: Any):
        if not rest:
            return 200, list(self.configurations.values()), {}
        config_id = rest[0]
        existing = self.configurations.get(config_id)
        if method == "GET":
            if existing is None:
                return _error(404, "ConfigurationNotFound", f"Configuration {config_id} not found")
            return 200, existing, {}
        if method == "DELETE":
            if existing is None:
                return _error(404, "ConfigurationNotFound", f"Configuration {config_id} not found")
            del self.configurations[config_id]
            return 204, None, {}
        if method == "PUT":
            if existing is not None and not headers.get("If-Match"):
                return _error(409, "ConfigurationAlreadyExists", f"{config_id} already exists")
            if existing is not None and existing["content"] != body.get("content"):
                return _error(400, "ConfigurationContentCannotBeUpdated", config_id)
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            stored = {
                **body,
                "createdTimeUtc": existing["createdTimeUtc"] if existing else now,
                "lastUpdatedTimeUtc": now,
                "etag": base64.b64encode(now.encode()).decode(),
                "systemMetrics": {"results": {}, "queries": {}},
                "metrics": {"results": {}, "queries": {}},
            }
            self.configurations[config_id] = stored
            return (200 if existing else 201), stored, {}
        return _error(405, "MethodNotAllowed", method)

    def _apply(self, device_id: str, body: Any):
        device = self.devices.get(device_id)
        if device is None:
            return _error(404, "DeviceNotFound", f"Device {device_id} not registered")
        if not device.edge:
            return _error(400, "DeviceNotEdgeEnabled", f"Device {device_id} is not edge enabled")
        content = (body or {}).get("modulesContent") or {}
        if "properties.desired" not in content.get("$edgeAgent", {}):
            return _error(400, "InvalidConfigurationContent", "$edgeAgent desired is required")
        self.applied.append((device_id, body))
        for module, twin in content.items():
            desired = dict(twin["properties.desired"])
            slot = device.twins.setdefault(module, {"desired": {}, "reported": {}})
            version = slot["desired"].get("$version", 0) + 1
            slot["desired"] = {**desired, "$version": version}
        return 204, None, {}

    def _module_twin(self, device_id: str, module_id: str):
        device = self.devices.get(device_id)
        if device is None or module_id not in device.twins:
            return _error(404, "ModuleNotFound", f"Module {device_id}/{module_id} not found")
        return 200, _twin(device_id, module_id, device.twins[module_id]), {}

    def _query(self, body: Any):
        match = MODULE_QUERY.match((body or {}).get("query", ""))
        if not match:
            return _error(400, "BadRequest", "the stand-in answers only module-id queries")
        twins = [
            _twin(device.device_id, match.group(1), device.twins[match.group(1)])
            for device in self.devices.values()
            if match.group(1) in device.twins
        ]
        return 200, twins, {"x-ms-item-type": "twin", "x-ms-continuation": ""}


def _twin(device_id: str, module_id: str, twin: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "deviceId": device_id,
        "moduleId": module_id,
        "etag": "AAAAAAAAAAE=",
        "version": 2,
        "properties": {"desired": twin["desired"], "reported": twin["reported"]},
    }


def _error(status: int, code: str, message: str) -> tuple[int, Any, dict]:
    return status, {"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": ""}, {}


def _handler(hub: IoTHubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = urllib.parse.urlsplit(self.path).path
            if not hub.authorised(self.headers.get("Authorization", "")):
                status, body, extra = _error(
                    401, "IotHubUnauthorizedAccess", "Unauthorized: the SAS token is invalid"
                )
            else:
                status, body, extra = hub.handle(
                    self.command, path, self.headers, json.loads(raw) if raw else None
                )
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    return Handler


@contextmanager
def iothub_standin(directory: Path, key: bytes = b"stand-in-policy-key") -> Iterator[IoTHubStandIn]:
    """Serve a stand-in hub on https://localhost:<free port> until the block ends.

    Yields the hub state; its `connection_string` uses `HostName=localhost:<port>`. The CA that
    signed its certificate is written to DIRECTORY/ca.pem: point REQUESTS_CA_BUNDLE at it.
    """
    ca = trustme.CA()
    certificate = ca.issue_cert("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    hub = IoTHubStandIn(
        host=f"localhost:{server.server_address[1]}", key=base64.b64encode(key).decode()
    )
    server.RequestHandlerClass = _handler(hub)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="iothub-standin", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
