"""``vulnattest demo``: the whole job on this machine, offline, in a minute; part of the command-line layer.

It builds small images with known (fictional) vulnerable packages, serves them from a throwaway registry, gives
Trivy an offline demo advisory DB, runs scan-and-attest and check-freshness, makes one image's scan old enough to
go stale, shows the alert on-call would get, and stops everything it started. With ``--admission`` it also starts a
Kubernetes API server with Kyverno's admission controller (`vulnattest.demo.cluster`) and ends as the job does in a
cluster: ``kubectl apply`` of a Pod created while its scan is fresh, and denied once it is aged.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from vulnattest.attestations import VULN_PREDICATE_TYPE, Invocation, sign_statement, vuln_statement
from vulnattest.config import load_config
from vulnattest.demo.cluster import LocalCluster
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, DEMO_DEBIAN_PACKAGES, alpine_image, debian_image
from vulnattest.demo.registry import LocalRegistry, push_image, push_index
from vulnattest.demo.trivydb import DEMO_ADVISORIES, write_trivy_db
from vulnattest.images import ImageRef
from vulnattest.kyverno import cluster_policy
from vulnattest.registry import resolve
from vulnattest.services import Services
from vulnattest.signing.keyfile import generate_keypair
from vulnattest.storage import report_key, verify_stored

STALE_IMAGE = "demo/legacy-batch:2.3"


class _Inbox(BaseHTTPRequestHandler):
    """Stands in for on-call's chat or pager: records every JSON alert POSTed to it."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def _inbox() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Inbox", (_Inbox,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def run_demo(console: Console, workdir: Path | None = None, *, admission: bool = False) -> int:
    """Run the walk-through; return the exit code (0 when every step did what it should). With `admission`, Pods
    go before Kyverno's admission controller too (raises VulnattestError, naming the build command, when its
    binaries are not built)."""
    with tempfile.TemporaryDirectory(prefix="vulnattest-demo-") as tmp, ExitStack() as stack:
        root = (workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        cluster = LocalCluster(directory=root / "cluster") if admission else None  # checks the binaries first
        registry = stack.enter_context(LocalRegistry())
        inbox_url, inbox = stack.enter_context(_inbox())
        stack.enter_context(_prefect_home(root / "prefect"))
        if cluster is not None:
            stack.callback(cluster.stop)  # started at its step, once the Prefect server is up
        return _walk(console, root, registry, inbox_url, inbox, cluster)


@contextmanager
def _prefect_home(home: Path) -> Iterator[None]:
    """Unless a Prefect API is configured, keep the demo's embedded server and its database in the demo's folder,
    and give it as long to start as `vulnattest run`'s own server gets (Prefect's 20 s is short on a busy machine
    with two cores)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield
        return
    home.mkdir(parents=True, exist_ok=True)
    updates: dict[Any, Any] = {PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 90
    with temporary_settings(updates=updates):
        yield


def _step(console: Console, number: int | str, text: str) -> None:
    console.print(f"\n[bold cyan]{number}.[/] [bold]{text}[/]")


def _walk(console: Console, root: Path, registry: LocalRegistry, inbox_url: str, inbox: list[dict[str, Any]],
          cluster: LocalCluster | None = None) -> int:
    from flows import results_of
    from flows.check_freshness import check_freshness
    from flows.scan_and_attest import scan_and_attest

    _step(console, 1, "An offline advisory DB for Trivy")
    cache = root / "trivy-cache"
    write_trivy_db(cache, DEMO_ADVISORIES)
    console.print(Panel(
        f"[yellow]DEMO ADVISORY DB[/]: {len(DEMO_ADVISORIES)} fictional advisories (CVE-2099-*) in {cache}.\n"
        "They describe no real flaw; a real fleet uses Trivy's own DB (`scanner.trivy.offline: false`).",
        expand=False,
    ))

    _step(console, 2, f"Demo images in a local registry at {registry.host}")
    client = registry.client()
    host = registry.host
    images = {
        "demo/storefront:1.4": alpine_image(DEMO_ALPINE_PACKAGES, marker="storefront"),
        "demo/payments:7.0": debian_image(DEMO_DEBIAN_PACKAGES, marker="payments"),
        STALE_IMAGE: alpine_image(DEMO_ALPINE_PACKAGES, marker="legacy"),
    }
    for name, image in images.items():
        repository, _, tag = name.partition(":")
        push_image(client, repository, tag, image)
    push_index(client, "demo/gateway", "3.1", {
        "linux/amd64": debian_image(DEMO_DEBIAN_PACKAGES, marker="gateway"),
        "linux/arm64": debian_image(DEMO_DEBIAN_PACKAGES, marker="gateway", architecture="arm64"),
    })
    refs = [f"{host}/{name}" for name in [*images, "demo/gateway:3.1"]]
    for ref in refs:
        console.print(f"  pushed {ref}")

    _step(console, 3, "A signing key and the fleet configuration")
    generate_keypair(root / "keys")
    config_path = root / "fleet.yaml"
    config_path.write_text(yaml.safe_dump({
        "images": refs,
        "registries": {host: {"insecure": True}},
        "scanner": {"trivy": {"cache_dir": str(cache), "offline": True}},
        "store": {"url": (root / "reports").as_uri()},
        "signing": {"key": str(root / "keys" / "vulnattest.key")},
        "freshness": {"max_age": "168h"},
        "alerts": [{"webhook": inbox_url, "name": "on-call inbox"}],
    }, sort_keys=False))
    console.print(f"  {config_path}\n  {root / 'keys' / 'vulnattest.pub'} is what Kyverno and verifiers trust")

    _step(console, 4, "scan-and-attest: resolve → scan → hash → store → verify → attest, for every image")
    scan_state = scan_and_attest(config_path=str(config_path), return_state=True)
    outcomes = results_of(scan_state)
    table = Table("image", "findings C H M L U", "report sha256", "attestation")
    for o in outcomes:
        table.add_row(_short(o.image, host), o.findings_text(), (o.report_sha256 or "-")[:16],
                      (o.attestation_digest or o.error or "-")[:19])
    console.print(table)
    if not scan_state.is_completed():
        console.print(f"[red]scan-and-attest failed: {scan_state.message}[/]")
        return 1

    _step(console, 5, "check-freshness: every attestation checked as Kyverno will (signature, subject, type, age)")
    verdicts = results_of(check_freshness(config_path=str(config_path), return_state=True))
    console.print("  " + ", ".join(f"{_short(v.image, host)}: [{'green' if v.ok else 'red'}]{v.verdict.value}[/]"
                                   for v in verdicts))
    if not all(v.ok for v in verdicts):  # each was attested a moment ago: anything but fresh is a fault
        console.print("[red]an image just attested is not fresh: " + "; ".join(
            f"{v.image}: {v.reason}" for v in verdicts if not v.ok) + "[/]")
        return 1

    pod = root / "pod.yaml"
    if cluster is not None:
        _step(console, "5b", "Admission: the ClusterPolicy of `vulnattest policy kyverno`, enforced by Kyverno")
        console.print("  starting a Kubernetes API server and Kyverno's admission controller on loopback …")
        cluster.start()
        console.print(f"  API server at {cluster.server}; Kyverno's webhooks registered")
        (root / "policy.yaml").write_text(yaml.safe_dump(cluster_policy(load_config(config_path), datetime.now(UTC)),
                                                         sort_keys=False))
        cluster.apply_policy(yaml.safe_load((root / "policy.yaml").read_text()))
        pod.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "legacy-batch", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": f"{host}/{STALE_IMAGE}"}]}}, sort_keys=False))
        if not _kubectl_apply(console, cluster, pod, expect_admitted=True):
            return 1

    _step(console, 6, f"Time passes for {STALE_IMAGE}: its last scan is now 8 days old")
    backdate(config_path, f"{host}/{STALE_IMAGE}", timedelta(days=8))
    console.print("  (re-attested with a scan that finished 8 days ago, past the 168h limit)")

    _step(console, 7, "check-freshness again: the stale image is caught, and on-call is told")
    before = len(inbox)
    verdicts = results_of(check_freshness(config_path=str(config_path), return_state=True))
    for v in verdicts:
        colour = "green" if v.ok else "red"
        console.print(f"  {_short(v.image, host)}: [{colour}]{v.verdict.value}[/]  {'' if v.ok else v.reason}")
    alerts = inbox[before:]
    for alert in alerts:
        console.print(Panel(str(alert.get("text") or json.dumps(alert, indent=2)), title="alert received by on-call",
                            expand=False))
    stale = [v for v in verdicts if v.verdict.value == "stale"]
    if [v.image for v in stale] != [f"{host}/{STALE_IMAGE}"] or not alerts:
        console.print("[red]the stale image was not reported as expected[/]")
        return 1

    if cluster is not None:
        _step(console, "7b", "The same Pod again: admission refuses it, as the alert said it would")
        cluster.kubectl("delete", "-f", str(pod), "--ignore-not-found")
        if not _kubectl_apply(console, cluster, pod, expect_admitted=False):
            return 1

    console.print(Panel(
        "Everything the demo started is stopped. To run vulnattest on your own fleet:\n\n"
        "  vulnattest keys generate keys                       # or bring a cosign key: vulnattest keys import\n"
        "  $EDITOR fleet.yaml                                  # images, store, alerts (README: configuration)\n"
        "  vulnattest run --config fleet.yaml                  # scan and attest once\n"
        "  vulnattest status --config fleet.yaml               # what admission would say, right now\n"
        "  vulnattest policy kyverno --config fleet.yaml       # the ClusterPolicy that enforces it\n"
        "  vulnattest serve --config fleet.yaml --ui           # deployments on a schedule, with the Prefect UI",
        title="next", expand=False,
    ))
    return 0


def _kubectl_apply(console: Console, cluster: LocalCluster, pod: Path, *, expect_admitted: bool) -> bool:
    """`kubectl apply -f pod.yaml`, shown as run; whether admission decided as expected."""
    console.print(f"  $ kubectl apply -f {pod.name}")
    done = cluster.kubectl("apply", "-f", str(pod), check=False)
    said = (done.stdout + done.stderr).strip()
    console.print(Panel(said, expand=False, border_style="green" if done.returncode == 0 else "red"))
    if (done.returncode == 0) is not expect_admitted:
        console.print(f"[red]admission {'refused' if expect_admitted else 'admitted'} the Pod, unlike what "
                      "vulnattest reported[/]")
        return False
    return True


def _short(image: str, host: str) -> str:
    return image.removeprefix(f"{host}/")


def backdate(config_path: Path, image: str, age: timedelta) -> None:
    """Re-attest `image` as if its last scan had finished `age` ago (a real scan, stored and verified)."""
    config = load_config(config_path)
    services = Services.for_attesting(config)
    try:
        client = services.registries.for_image(ImageRef.parse(image))
        report = services.require_scanner().scan(resolve(client, ImageRef.parse(image)))
        finished = datetime.now(UTC) - age
        report = type(report)(report.image, report.body, finished - (report.finished - report.started), finished,
                              report.scanner, report.findings)
        stored = services.store.put(report_key(report.image.image, finished), report.body, report.sha256)
        verified = verify_stored(services.store, stored, report.sha256)
        envelope = sign_statement(vuln_statement(report, verified, Invocation("demo-backdated")),
                                  services.require_signer())
        services.attacher.attach(client, report.image, envelope, VULN_PREDICATE_TYPE)
    finally:
        services.close()
