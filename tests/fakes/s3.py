"""A local **stand-in** for Amazon S3: moto's server mode (`moto.server`), on 127.0.0.1.

It is not S3: no object store can be reached from the test machines, so the tests run the real
clients (boto3 for buckets and MLflow's artifact store, s3fs/aiobotocore for captures) against
moto's S3 implementation over HTTP. What moto models is its own documentation's business; the
tests here rely only on buckets, put/get/list/copy/delete of objects and multipart uploads.

Outages: `stop()` shuts the listener and closes its socket, so clients get "connection refused"
(a stopped store, not a hanging one); `start()` serves again on the same port. The objects
survive both, because moto keeps its state in this process's backends, not in the listener.
Every process pointed at it through `env()` (the scoring service, `mlflow server`, the CLI)
reaches the same data.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from mlops_pipeline.serving.contract import free_port
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

ACCESS_KEY = "stand-in-access-key"
SECRET_KEY = "stand-in-secret-key"
REGION = "us-east-1"


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (thousands under load)."""

    def log_request(self, *args: object, **kwargs: object) -> None:
        return None


class S3StandIn:
    """moto's S3 served on 127.0.0.1:`port` from a thread of this process; restartable."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen on the port again (a no-op when already listening)."""
        if self._server is not None:
            return
        # werkzeug's server sets SO_REUSEADDR, so the port binds again right after a stop
        self._server = make_server(
            "127.0.0.1", self.port, self._app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-stand-in", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the socket: new connections are refused until `start()`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def env(self) -> dict[str, str]:
        """Environment that points boto3, s3fs, fsspec and MLflow's S3 store at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            # botocore (boto3, and aiobotocore under s3fs) reads the endpoint from here
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            # MLflow's S3 artifact repository and fsspec's s3 defaults read their own variables
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
        }

    def client(self):
        """A real boto3 S3 client for this server."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` with boto3; returns it."""
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in `bucket`, listed with boto3 (paginated)."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def s3_stand_in() -> Iterator[S3StandIn]:
    """A running S3 stand-in, its endpoint and dummy credentials in os.environ for the block.

    s3fs caches filesystem instances per set of arguments: instances made for another endpoint
    are dropped on entry and exit, so no test talks to a server that is gone.
    """
    import s3fs

    server = S3StandIn()
    server.start()
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        s3fs.S3FileSystem.clear_instance_cache()
