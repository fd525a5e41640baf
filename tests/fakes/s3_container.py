"""The S3 stand-in (moto's server mode, as tests/fakes/s3.py) in a Docker container, for tests
whose S3 clients run both in containers and in the test process: the stand-in Kubernetes API
server's pods reach it by a network alias on that server's Docker network, the test process on
127.0.0.1 only (its port published there and nowhere else).

The image is built offline like the model images: the local Debian base image, moto and its
server's web framework from a wheelhouse built on the host (mlops_pipeline.images'
`ensure_wheelhouse`, pinned to the versions this test environment runs), no registry pull.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version

import boto3
import httpx
from mlops_pipeline.images import ensure_wheelhouse
from mlops_pipeline.serving.contract import free_port

from tests.fakes.s3 import ACCESS_KEY, REGION, SECRET_KEY

PORT = 5000
LABEL = "mlops.s3-standin"
# moto's S3 backend and the Flask app of `moto_server`, at the versions the tests run here
REQUIREMENTS = (
    f"moto[s3]=={version('moto')}",
    f"flask=={version('flask')}",
    f"flask-cors=={version('flask-cors')}",
)
DOCKERFILE = """\
FROM {base_image}
COPY wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/moto \\
    && /opt/moto/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse \\
        {requirements} \\
    && rm -rf /tmp/wheelhouse
EXPOSE {port}
CMD ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "{port}"]
"""


def build_moto_image(engine, base_image: str, tag: str) -> str:
    """Build moto's server as image `tag` from `base_image` and the host wheelhouse (the
    MLOPS_WHEELHOUSE of the caller's settings); returns the tag."""
    wheels = ensure_wheelhouse(sorted(REQUIREMENTS))
    requirements = " ".join(f"'{r}'" for r in REQUIREMENTS)
    dockerfile = DOCKERFILE.format(base_image=base_image, requirements=requirements, port=PORT)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for wheel in sorted(wheels.glob("*.whl")):
            tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
    context.seek(0)
    engine.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag


class S3Container:
    """moto's S3 in a container on Docker network `network` as host `alias`, its port
    published on 127.0.0.1:`port`.

    `endpoint` is for the test process, `pod_endpoint` for containers on the network.
    """

    def __init__(self, engine, image: str, network: str, alias: str = "s3") -> None:
        self.engine, self.image, self.network, self.alias = engine, image, network, alias
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.pod_endpoint = f"http://{alias}:{PORT}"
        self.container = None

    def start(self, timeout: float = 60.0) -> S3Container:
        """Run the container and wait until moto answers on 127.0.0.1."""
        endpoint = self.engine.api.create_endpoint_config(aliases=[self.alias])
        self.container = self.engine.containers.run(
            self.image,
            name=f"s3-standin-{uuid.uuid4().hex[:8]}",
            detach=True,
            network=self.network,
            networking_config={self.network: endpoint},
            ports={f"{PORT}/tcp": ("127.0.0.1", self.port)},
            labels={LABEL: "1"},
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.endpoint, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                logs = self.container.logs(tail=20).decode(errors="replace")
                raise RuntimeError(f"moto did not answer on {self.endpoint} in {timeout} s: {logs}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.container is not None:
            self.container.remove(force=True)
            self.container = None

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` with a real boto3 client, from this process; returns it."""
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        ).create_bucket(Bucket=name)
        return name

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What points boto3, s3fs and fsspec at this store: the test process's endpoint, or
        `endpoint` (the pods')."""
        url = endpoint or self.endpoint
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": url,
            "AWS_ENDPOINT_URL_S3": url,
            "FSSPEC_S3_ENDPOINT_URL": url,
        }


@contextmanager
def s3_container(engine, image: str, network: str, alias: str = "s3") -> Iterator[S3Container]:
    """A running S3Container for the block; removed afterwards, whatever happened."""
    store = S3Container(engine, image, network, alias)
    try:
        yield store.start()
    finally:
        store.stop()
