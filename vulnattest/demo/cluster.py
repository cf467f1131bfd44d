"""A Kubernetes API server (with its etcd) and Kyverno's admission controller, all on loopback, so that creating a
Pod gets Kyverno's real admission decision. There is no kubelet: an admitted Pod stays Pending.

The binaries are the ones ``python -m tests.oracles build etcd kubernetes kyverno-controller`` builds into the tools
cache. Kyverno runs out of cluster, as its own ``.vscode/launch.json`` runs it: it makes its webhook certificates
itself (for ``--serverIP``) and registers its webhooks with ``https://127.0.0.1:<port>/...`` URLs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vulnattest.errors import VulnattestError
from vulnattest.localservice import LocalService, StartedUntilStopped, free_port

__all__ = ["BUILD_HINT", "Admission", "LocalCluster", "default_tool_folders"]

logger = logging.getLogger(__name__)

# the versions tests/oracles.py builds (tests are no dependency of the package, so they are repeated here)
ETCD_VERSION = "v3.6.8"
KUBERNETES_VERSION = "v1.36.3"
KYVERNO_VERSION = "v1.19.1"
BUILD_HINT = "build them with `python -m tests.oracles build etcd kubernetes kyverno-controller`"

KYVERNO_NAMESPACE = "kyverno"
# what Kyverno's controller registers at start (the resource webhooks get their rules as policies arrive)
_KYVERNO_WEBHOOKS = frozenset({
    "validatingwebhookconfiguration.admissionregistration.k8s.io/kyverno-policy-validating-webhook-cfg",
    "validatingwebhookconfiguration.admissionregistration.k8s.io/kyverno-resource-validating-webhook-cfg",
    "mutatingwebhookconfiguration.admissionregistration.k8s.io/kyverno-policy-mutating-webhook-cfg",
    "mutatingwebhookconfiguration.admissionregistration.k8s.io/kyverno-resource-mutating-webhook-cfg",
})


def default_tool_folders() -> tuple[Path, Path, Path]:
    """The folders of etcd, kube-apiserver and kubectl, and Kyverno's controller in the tools cache
    (``$VULNATTEST_TOOLS``, by default ``~/.cache/vulnattest-tools``)."""
    configured = os.environ.get("VULNATTEST_TOOLS")
    cache = Path(configured) if configured else Path.home() / ".cache" / "vulnattest-tools"
    return (cache / f"etcd-{ETCD_VERSION}", cache / f"kubernetes-{KUBERNETES_VERSION}",
            cache / f"kyverno-controller-{KYVERNO_VERSION}")


@dataclass(frozen=True)
class Admission:
    """The API server's answer to creating a Pod: admitted (with its image as admitted: Kyverno's ``mutateDigest``
    pins it to a digest) or denied with the webhook's message."""

    admitted: bool
    message: str
    image: str | None = None


class _Program(LocalService):
    """One program of the cluster, its log (``<name>.log``) in the cluster's directory."""

    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(directory)
        self.name = name

    def run(self, command: list[str], health_url: str, timeout: float, env: dict[str, str] | None = None,
            verify: ssl.SSLContext | bool = True) -> None:
        """Start `command` and wait until `health_url` answers 200 (the log's tail in the error otherwise)."""
        self._launch(command, health_url, timeout, env=env, verify=verify)


class LocalCluster(StartedUntilStopped):
    """etcd, kube-apiserver and Kyverno's admission controller on free 127.0.0.1 ports, in one scratch directory
    (PKI, kubeconfig, data and each program's log), until stopped. `kyverno_env` adds to Kyverno's environment (an
    AWS endpoint for its ``kms`` attestors, say).

    Every program runs in its own process group and dies with the thread that started it (see `LocalService`).
    """

    def __init__(self, etcd: Path | None = None, kubernetes: Path | None = None, kyverno: Path | None = None,
                 directory: Path | None = None, kyverno_env: dict[str, str] | None = None) -> None:
        defaults = default_tool_folders()
        self._etcd_dir, self._kubernetes_dir, self._kyverno_dir = (
            folder or default for folder, default in zip((etcd, kubernetes, kyverno), defaults, strict=True))
        missing = [str(path) for path in (self._etcd_dir / "etcd", self._kubernetes_dir / "kube-apiserver",
                                          self._kubernetes_dir / "kubectl", self._kyverno_dir / "kyverno",
                                          self._kyverno_dir / "install.yaml") if not path.is_file()]
        if missing:
            raise VulnattestError(f"the local cluster's tools are missing ({', '.join(missing)}); {BUILD_HINT}")
        self._tmp = tempfile.TemporaryDirectory(prefix="vulnattest-cluster-") if directory is None else None
        self.directory = Path(self._tmp.name) if self._tmp is not None else directory or Path(".")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.directory / "kubeconfig"
        self._kyverno_env = kyverno_env or {}
        self._etcd = _Program("etcd", self.directory)
        self._apiserver = _Program("kube-apiserver", self.directory)
        self._kyverno = _Program("kyverno", self.directory)

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self._apiserver.port}"

    def start(self, timeout: float = 120.0) -> Self:
        """Start etcd, the API server and Kyverno; return once Kyverno's webhooks are registered and it is ready."""
        started = time.monotonic()
        try:
            _write_pki(self.directory)
            self._write_kubeconfig()
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._install_kyverno_resources()
            self._start_kyverno(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("local cluster ready at %s in %.1f s", self.server, time.monotonic() - started)
        return self

    def _start_etcd(self, timeout: float) -> None:
        client, peer = f"http://127.0.0.1:{self._etcd.port}", f"http://127.0.0.1:{free_port()}"
        self._etcd.run([
            str(self._etcd_dir / "etcd"), "--name=local", f"--data-dir={self.directory / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=local={peer}",
            "--unsafe-no-fsync",  # a throwaway store: durability only costs time
        ], f"{client}/health", timeout)

    def _start_apiserver(self, timeout: float) -> None:
        pki = self.directory
        self._apiserver.run([
            str(self._kubernetes_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self._etcd.port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self._apiserver.port}",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}", f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # no endpoint for the `kubernetes` Service: a loopback address is not a valid one
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            # no controller manager makes service-account tokens; APF's bootstrap adds seconds and nothing here
            "--disable-admission-plugins=ServiceAccount", "--enable-priority-and-fairness=false",
        ], f"{self.server}/readyz", timeout, verify=ssl.create_default_context(cafile=pki / "ca.crt"))

    def _install_kyverno_resources(self) -> None:
        # Kyverno's own manifest without what runs it in a cluster (its Deployments and their Services); 6 MB of
        # YAML: libyaml reads it in 1 s, pure Python in 8
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        documents = [doc for doc in yaml.load_all((self._kyverno_dir / "install.yaml").read_text(), Loader=loader)
                     if doc and doc["kind"] not in {"Deployment", "Service"}]
        manifest = self.directory / "kyverno-install.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
        # `create`, not `apply`: Kyverno's CRDs are too big for the last-applied annotation
        self.kubectl("create", "-f", str(manifest), "-o", "name")
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "customresourcedefinitions", "--all")

    def _start_kyverno(self, timeout: float) -> None:
        port = self._kyverno.port
        env = {
            **os.environ,
            "KYVERNO_NAMESPACE": KYVERNO_NAMESPACE,
            "KYVERNO_SERVICEACCOUNT_NAME": "kyverno-admission-controller",
            "KYVERNO_DEPLOYMENT": "kyverno-admission-controller",
            "KYVERNO_POD_NAME": "kyverno-admission-controller-local",
            "INIT_CONFIG": "kyverno",
            "METRICS_CONFIG": "kyverno-metrics",
            **self._kyverno_env,
        }
        self._kyverno.run([
            str(self._kyverno_dir / "kyverno"), f"--kubeconfig={self.kubeconfig}",
            # out of cluster: webhooks by URL, and a serving certificate for this address (Kyverno makes its CA and
            # the pair, and keeps them in these secrets)
            f"--serverIP=127.0.0.1:{port}", "--webhookServerHost=127.0.0.1", f"--webhookServerPort={port}",
            f"--caSecretName=kyverno-svc.{KYVERNO_NAMESPACE}.svc.kyverno-tls-ca",
            f"--tlsSecretName=kyverno-svc.{KYVERNO_NAMESPACE}.svc.kyverno-tls-pair",
            f"--backgroundServiceAccountName=system:serviceaccount:{KYVERNO_NAMESPACE}:kyverno-background-controller",
            f"--reportsServiceAccountName=system:serviceaccount:{KYVERNO_NAMESPACE}:kyverno-reports-controller",
            "--allowInsecureRegistry",  # the test registries speak plain HTTP
            "--imageVerifyCacheEnabled=false",  # else a verification is reused for 60 min, whatever changed since
            "--admissionReports=false",  # no reports controller runs to consume them
            # its Prometheus endpoint listens even with --disableMetrics: keep it off the default :8000
            "--disableMetrics", "--metricsHost=127.0.0.1", f"--metricsPort={free_port()}",
            "--controllerRuntimeMetricsAddress=0", "--disableLogColor", "-v=2",
        ], f"https://127.0.0.1:{port}/health/readiness", timeout, env=env,
            # only a probe of what the API server will verify (the webhooks carry Kyverno's CA)
            verify=False)
        deadline = time.monotonic() + timeout
        while True:
            registered = self.kubectl("get", "validatingwebhookconfigurations,mutatingwebhookconfigurations",
                                      "-o", "name").stdout.split()
            if set(registered) >= _KYVERNO_WEBHOOKS:
                return
            if time.monotonic() > deadline:
                raise VulnattestError(f"Kyverno registered only {registered} within {timeout:.0f}s; see "
                                      f"{self._kyverno.log_path}: {_tail(self._kyverno.log_path)}")
            time.sleep(0.2)

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server, "certificate-authority": str(self.directory / "ca.crt")}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(self.directory / "admin.crt"),
                "client-key": str(self.directory / "admin.key")}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the cluster's admin; a failure raises (with kubectl's message) unless `check` is False."""
        command = [str(self._kubernetes_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}",
                   f"--cache-dir={self.directory / 'kubectl-cache'}", *args]
        done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise VulnattestError(f"`kubectl {' '.join(args)}` failed: {done.stderr.strip()}")
        return done

    def apply_policy(self, policy: dict[str, Any], timeout: float = 60.0) -> None:
        """Create `policy` (a Kyverno ClusterPolicy, ImageValidatingPolicy, ...), replacing one of its name, and
        return once Kyverno reports it ready, that is enforced by its webhooks."""
        document = json.dumps(policy)
        # deleted first, not updated: a replaced policy would still carry the old one's Ready status
        self.kubectl("delete", "--ignore-not-found", "-f", "-", input=document)
        self.kubectl("create", "-f", "-", input=document)
        # by kind and name: `kubectl get -f` answers without the status
        group = policy["apiVersion"].split("/")[0]
        name = f"{policy['kind']}.{group}/{policy['metadata']['name']}"
        deadline = time.monotonic() + timeout
        while True:
            status = json.loads(self.kubectl("get", name, "-o", "json").stdout).get("status", {})
            if _ready(status):
                return
            if time.monotonic() > deadline:
                raise VulnattestError(f"Kyverno did not make {policy['kind']} {policy['metadata']['name']} ready "
                                      f"within {timeout:.0f}s (status {json.dumps(status)}); see "
                                      f"{self._kyverno.log_path}")
            time.sleep(0.1)

    def delete_policies(self) -> None:
        """Delete every Kyverno policy (ClusterPolicy, ImageValidatingPolicy): Pods go before no policy."""
        self.kubectl("delete", "clusterpolicies.kyverno.io,imagevalidatingpolicies.policies.kyverno.io", "--all",
                     "--wait=true")

    def create_pod(self, namespace: str, name: str, image: str) -> Admission:
        """Create a one-container Pod running `image`, and say whether the API server (Kyverno) admitted it."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
               "spec": {"containers": [{"name": "main", "image": image}]}}
        done = self.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(pod), check=False)
        if done.returncode == 0:
            created = json.loads(done.stdout)
            return Admission(True, "", created["spec"]["containers"][0]["image"])
        if "denied the request" not in done.stderr:
            raise VulnattestError(f"creating Pod {namespace}/{name} ({image}) failed: {done.stderr.strip()}")
        return Admission(False, done.stderr.strip())

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a Pod (gone at once: no kubelet holds it); none of that name is no error."""
        self.kubectl("delete", "pod", "--namespace", namespace, name, "--ignore-not-found")

    def stop(self) -> None:
        """Stop Kyverno, the API server and etcd, in that order; remove the directory if this object made it."""
        for program in (self._kyverno, self._apiserver, self._etcd):
            program.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def _ready(status: dict[str, Any]) -> bool:
    """Whether a Kyverno policy's status says it is ready: ``conditionStatus.ready`` for the policies.kyverno.io
    kinds, a ``Ready`` condition for kyverno.io's."""
    if "conditionStatus" in status:
        return status["conditionStatus"].get("ready") is True
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _write_pki(directory: Path) -> None:
    """A CA, the API server's serving pair (127.0.0.1, localhost), an admin client pair (``system:masters``) and the
    service-account signing pair, as PEM files in `directory`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("vulnattest local cluster CA")
    (directory / "ca.crt").write_bytes(_certificate(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(_name("kube-apiserver"), server_key.public_key(), ca_name, ca_key,
                          usage=ExtendedKeyUsageOID.SERVER_AUTH,
                          names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                 x509.DNSName("localhost")])
    (directory / "apiserver.crt").write_bytes(server)
    (directory / "apiserver.key").write_bytes(_private_pem(server_key))
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                            x509.NameAttribute(NameOID.COMMON_NAME, "vulnattest-admin")])
    admin = _certificate(admin_name, admin_key.public_key(), ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    (directory / "admin.crt").write_bytes(admin)
    (directory / "admin.key").write_bytes(_private_pem(admin_key))
    service_accounts = ec.generate_private_key(ec.SECP256R1())
    (directory / "sa.key").write_bytes(_private_pem(service_accounts))
    (directory / "sa.pub").write_bytes(service_accounts.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 usage: x509.ObjectIdentifier | None = None, names: list[x509.GeneralName] | None = None) -> bytes:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
