"""Shared test services, started once per session: a real registry, an S3 server, a Trivy DB, Prefect."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import boto3
import pytest
import yaml
from botocore.config import Config

from vulnattest.demo.cluster import LocalCluster
from vulnattest.demo.registry import INSTALL_HINT, LocalRegistry, free_port
from vulnattest.demo.testpki import FakeSigstoreServer, TestSigstore


def missing(hint: str) -> NoReturn:
    """Stop a test whose real part is not installed: a skip naming `hint` (how to install it), a failure in CI."""
    if os.environ.get("CI"):
        pytest.fail(hint, pytrace=False)
    pytest.skip(hint)


def oracle(name: str, binary: str | None = None) -> Path:
    """The built binary of tool `name` (tests/oracles.py), or a skip (a failure in CI) naming how to build it."""
    from tests.oracles import TOOLS, build_hint

    tool = TOOLS[name]
    if not tool.built:
        missing(build_hint(name))
    return tool.path(binary)


@pytest.fixture(scope="session")
def cosign() -> Path:
    """cosign (sigstore/cosign v3)."""
    return oracle("cosign")


@pytest.fixture(scope="session")
def kyverno() -> Path:
    """Kyverno's CLI (kubectl-kyverno)."""
    return oracle("kyverno-cli")


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """Debian's docker-registry on a free loopback port."""
    if shutil.which("docker-registry") is None:
        missing(INSTALL_HINT)
    with LocalRegistry() as running:
        yield running


@pytest.fixture(scope="session")
def cluster(kms_endpoint: str) -> Iterator[LocalCluster]:
    """etcd, kube-apiserver and Kyverno's admission controller on free loopback ports: a created Pod gets Kyverno's
    real admission decision. Kyverno reaches the tests' KMS server for its ``kms`` attestors."""
    etcd, apiserver, kyverno = oracle("etcd"), oracle("kubernetes"), oracle("kyverno-controller")
    aws = {"AWS_ENDPOINT_URL_KMS": kms_endpoint, "AWS_REGION": "us-east-1"}
    with LocalCluster(etcd.parent, apiserver.parent, kyverno.parent, kyverno_env=aws) as running:
        yield running


@pytest.fixture
def no_policies(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The session's cluster with no Kyverno policy in force, before and after the test (each test brings its own:
    one left from another test could refuse this one's Pods)."""
    cluster.delete_policies()
    yield cluster
    cluster.delete_policies()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, spoken to over HTTP; fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def silent_endpoint() -> Iterator[str]:
    """An endpoint that takes connections and never answers, as a hung server does (the kernel completes the
    handshake, nothing reads the request)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def short_timeouts() -> Config:
    """A botocore config that gives up on a silent endpoint within a second, without retrying."""
    return Config(connect_timeout=1, read_timeout=0.5, retries={"total_max_attempts": 1})


def kms_signing_key(endpoint: str, name: str) -> str:
    """A new ECDSA P-256 signing key in the KMS server at `endpoint`, named ``awskms:///alias/<name>``."""
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/{name}", TargetKeyId=key)
    return f"awskms:///alias/{name}"


@pytest.fixture(scope="session")
def kms_endpoint(s3_endpoint: str) -> Iterator[str]:
    """A KMS server that signs as AWS does (moto, with DIGEST honoured: see tests/kms_server.py), in its own process;
    the fake credentials come with `s3_endpoint`."""
    from tests.kms_server import KmsTestServer

    with KmsTestServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def trivy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Trivy cache holding the offline demo advisory DB."""
    if shutil.which("trivy") is None:
        missing("trivy not on PATH; install it with `pip install -e '.[trivy]'`")
    from vulnattest.demo.trivydb import DEMO_ADVISORIES, write_trivy_db

    cache = tmp_path_factory.mktemp("trivy-cache")
    write_trivy_db(cache, DEMO_ADVISORIES)
    return cache


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's test harness (a real API server on a temporary SQLite DB), entered once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def pki() -> TestSigstore:
    """A test Sigstore PKI: Fulcio CA, Rekor and CT log keys."""
    return TestSigstore()


@pytest.fixture(scope="session")
def sigstore(pki: TestSigstore) -> Iterator[FakeSigstoreServer]:
    """Fulcio and Rekor of the test PKI on a loopback port."""
    with FakeSigstoreServer(pki).running() as server:
        yield server


def kyverno_crd_schema(group: str, file: str, version: str) -> dict[str, Any]:
    """The schema of one version of one of Kyverno v1.19.1's CRDs, as its release (the module the Kyverno oracle is
    built from) ships them; a skip naming the build command where it is not built (a failure in CI)."""
    from tests.oracles import TOOLS, build_hint

    tool = TOOLS["kyverno-controller"]
    path = tool.folder / "crds" / group / file
    if not path.exists():
        missing(build_hint(tool.name))
    crd = yaml.safe_load(path.read_text())
    [found] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = found["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    """Kyverno's ClusterPolicy v1 schema."""
    return kyverno_crd_schema("kyverno", "kyverno.io_clusterpolicies.yaml", "v1")


@pytest.fixture(scope="session")
def ivp_crd_schema() -> dict[str, Any]:
    """Kyverno's ImageValidatingPolicy v1beta1 schema."""
    return kyverno_crd_schema("policies.kyverno.io", "policies.kyverno.io_imagevalidatingpolicies.yaml", "v1beta1")


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An unencrypted signing key pair."""
    from vulnattest.signing.keyfile import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def deployment(pki: TestSigstore, sigstore: FakeSigstoreServer, tmp_path: Path) -> Path:
    """A private Sigstore deployment's files beside a config: the client trust config and the trusted root."""
    (tmp_path / "trust_config.json").write_bytes(pki.trust_config_json(sigstore.url, sigstore.url))
    (tmp_path / "trusted_root.json").write_bytes(pki.trusted_root_json(rekor_url=sigstore.url))
    return tmp_path


@dataclass
class ConfigWriter:
    """Writes fleet config files for tests, with the session's registry, Trivy DB and key filled in."""

    directory: Path
    registry: LocalRegistry
    trivy_cache: Path
    key: Path

    def write(self, images: list[str], name: str = "fleet.yaml", **overrides: object) -> Path:
        """Write a config listing `images` to `name`; `overrides` replace top-level sections."""
        config: dict[str, object] = {
            "images": images,
            "registries": {self.registry.host: {"insecure": True}},
            "scanner": {"trivy": {"cache_dir": str(self.trivy_cache), "offline": True}},
            "store": {"url": (self.directory / "reports").as_uri()},
            "signing": {"key": str(self.key)},
            "concurrency": 4,
            **overrides,
        }
        path = self.directory / name
        path.write_text(yaml.safe_dump(config))
        return path


@pytest.fixture
def config_writer(
    tmp_path: Path, registry: LocalRegistry, trivy_cache: Path, keypair: tuple[Path, Path]
) -> ConfigWriter:
    """A ConfigWriter in this test's temporary directory."""
    return ConfigWriter(tmp_path, registry, trivy_cache, keypair[0])


@dataclass(frozen=True)
class DemoImages:
    """References to images pushed once per session: an Alpine, a Debian and a two-platform Alpine index."""

    alpine: str
    debian: str
    multi: str


@pytest.fixture(scope="session")
def demo_images(registry: LocalRegistry) -> DemoImages:
    """Push the demo images into the session registry."""
    from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, DEMO_DEBIAN_PACKAGES, alpine_image, debian_image
    from vulnattest.demo.registry import push_image, push_index

    client = registry.client()
    push_image(client, "session/alpine", "3.19", alpine_image(DEMO_ALPINE_PACKAGES))
    push_image(client, "session/debian", "12", debian_image(DEMO_DEBIAN_PACKAGES))
    push_index(client, "session/multi", "1", {
        "linux/amd64": alpine_image(DEMO_ALPINE_PACKAGES, marker="multi"),
        "linux/arm64": debian_image(DEMO_DEBIAN_PACKAGES, marker="multi", architecture="arm64"),
    })
    client.close()
    host = registry.host
    return DemoImages(f"{host}/session/alpine:3.19", f"{host}/session/debian:12", f"{host}/session/multi:1")


def poll_events(event_filter: Any, expected: int, timeout: float, interval: float = 0.2) -> list[Any]:
    """Events matching `event_filter`, read until `expected` arrived or the deadline passed (events land async)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=event_filter, limit=50).events
        if len(events) >= expected or time.monotonic() > deadline:
            return list(events)
        time.sleep(interval)


def task_runs(state: Any, expected: int, timeout: float = 30.0) -> list[Any]:
    """The flow run's finished task runs, once the server has recorded `expected` of them (it records them from
    events)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=flow_filter)
        done = [r for r in runs if r.state is not None and r.state.is_final()]
        if len(done) >= expected or time.monotonic() > deadline:
            return done
        time.sleep(0.2)
