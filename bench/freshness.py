"""How fast check-freshness judges a fleet: the flow vs a plain sequential verification loop, same images.

    python bench/freshness.py                  # 1000 images
    python bench/freshness.py --images 50      # CI smoke

Attests M tiny distinct images cheaply (statements signed directly with `sign_statement` and attached with
`CosignAttacher`, no scan), then times the check-freshness flow on a real Prefect server, first on a fleet it has
never seen (every verdict is a change: an event each, the alert state written) and then again (nothing changed,
the hourly steady state), and a sequential loop of `FreshnessChecker.check` over the same images. A run's time is
its duration as the server records it (Running to its final state; the in-process call's fixed extra is printed
beside it); each starts on a quiet machine. The last line is
``RESULT images=<m> seconds=<s> images_per_s=<n> speedup_vs_sequential=<x> peak_rss_mb=<n>`` for the first run.
No timing is asserted: this is a measurement, run by hand or as a CI smoke.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (  # sets the benchmarks' Prefect logging default before Prefect loads
    CpuMeter,
    PeakRss,
    TimedFlowRun,
    pid_of,
    prefect_server,
    process_peak_rss_mb,
    quiesce,
    require_tools,
    result_line,
    workspace,
)

from vulnattest.attestations import VULN_PREDICATE_TYPE, Invocation, sign_statement, vuln_statement
from vulnattest.attestations.cosign import CosignAttacher
from vulnattest.config import load_config
from vulnattest.demo.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, Image, layer_tar
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.freshness import FreshnessChecker, ImageVerdict
from vulnattest.images import ImageRef
from vulnattest.registry import RegistryClient, ResolvedImage
from vulnattest.scanners.interface import ScannerInfo, ScanReport
from vulnattest.services import Services
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair
from vulnattest.storage import ObjectKey, StoredObject, VerifiedReport

TRIVY = ScannerInfo("pkg:github/aquasecurity/trivy@0.76.0", "0.76.0", "oci://mirror.gcr.io/aquasec/trivy-db:2", "2")
# a Trivy report in miniature: the predicate is what admission reads, its size is not what this bench measures
REPORT = json.dumps({"SchemaVersion": 2, "ArtifactName": "bench", "Results": [{
    "Target": "bench (alpine 3.19.1)", "Class": "os-pkgs", "Type": "alpine", "Vulnerabilities": [
        {"VulnerabilityID": "CVE-2098-00001", "PkgName": "busybox", "InstalledVersion": "1.36.1-r15",
         "FixedVersion": "1.36.1-r16", "Severity": "HIGH"}]}]}).encode()
_LAYER = Blob(OCI_LAYER, gzip.compress(layer_tar({"etc/bench": b"bench\n"}), mtime=0))


def arguments() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="attested images in the fleet (default 1000)")
    parser.add_argument("--concurrency", type=int, default=4, help="the config's concurrency (default 4)")
    parser.add_argument("--workdir", type=Path, help="keep the registry, keys and store here (default: a temp dir)")
    return parser.parse_args()


def tiny_image(name: str) -> Image:
    """A distinct image of one shared tiny layer: only its config (and so its digest) differs."""
    config = Blob(OCI_CONFIG, json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"app": name}},
                                          "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": [_LAYER.descriptor()]}
    return Image(config, (_LAYER,), Blob(OCI_MANIFEST, json.dumps(manifest).encode()))


def attest_fleet(client: RegistryClient, host: str, count: int, signer: KeyFileSigner) -> list[str]:
    """Push `count` tiny images and attach a signed vuln attestation to each, scanned a few hours ago."""
    attacher = CosignAttacher()
    finished = datetime.now(UTC) - timedelta(hours=3)

    def one(i: int) -> str:
        repository = f"freshbench/app-{i:05d}"
        digest = push_image(client, repository, "1", tiny_image(repository))
        ref = ImageRef.parse(f"{host}/{repository}:1")
        image = ResolvedImage(ref.with_digest(digest), digest, OCI_MANIFEST, digest)
        report = ScanReport(image=image, body=REPORT, started=finished - timedelta(seconds=20), finished=finished,
                            scanner=TRIVY, findings=())
        stored = VerifiedReport(StoredObject(ObjectKey(f"reports/{i}.json"), f"s3://bench/reports/{i}.json",
                                             report.sha256))
        envelope = sign_statement(vuln_statement(report, stored, Invocation()), signer)
        attacher.attach(client, image, envelope, VULN_PREDICATE_TYPE)
        return str(ref)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(count)))


def flow_run(config: Path, pids: tuple[int, int]) -> TimedFlowRun:
    """Run check-freshness in this process against the server and time it."""
    from flows.check_freshness import check_freshness

    return TimedFlowRun.of(lambda: check_freshness(config_path=str(config), return_state=True), pids)


def sequential(config: Path, pids: tuple[int, int]) -> tuple[float, list[ImageVerdict], CpuMeter]:
    """The plain loop: one process, one image after another, the same checker and registry client."""
    loaded = load_config(config)
    services = Services.for_checking(loaded)
    checker = FreshnessChecker.from_config(loaded, services.verifier(), str(config))
    try:
        cpu = CpuMeter.read(*pids)
        started = time.perf_counter()
        verdicts = [checker.check(services.registries.for_image(ref), ref) for ref in loaded.image_refs()]
        return time.perf_counter() - started, verdicts, CpuMeter.read(*pids) - cpu
    finally:
        services.close()


def main() -> None:
    """Attest the fleet, time the flow (twice) and the sequential loop, print the report and the RESULT line."""
    args = arguments()
    require_tools(trivy=False)
    with workspace(args.workdir, f"freshness benchmark: {args.images} images, concurrency {args.concurrency}") as root:
        measure(args, root)


def measure(args: argparse.Namespace, root: Path) -> None:
    """Attest the fleet in `root`, time the flow (twice) and the sequential loop, print the report."""
    key, _ = generate_keypair(root / "keys")
    with LocalRegistry(root / "registry") as registry, prefect_server() as server:
        client = registry.client()
        started = time.perf_counter()
        refs = attest_fleet(client, registry.host, args.images, KeyFileSigner.from_file(key))
        client.close()
        print(f"attested {len(refs)} tiny images in {time.perf_counter() - started:.1f}s (setup, not timed)")
        config = root / "fleet.yaml"
        config.write_text(yaml.safe_dump({
            "images": refs, "registries": {registry.host: {"insecure": True}},
            "store": {"url": (root / "store").as_uri()}, "signing": {"key": str(key)},
            "concurrency": args.concurrency,
        }))
        pids = (pid_of(registry), pid_of(server))
        quiesce(*pids)
        first = flow_run(config, pids)
        quiesce(*pids)
        steady = flow_run(config, pids)
        quiesce(*pids)
        loop_seconds, loop_verdicts, loop_cpu = sequential(config, pids)
        rss = PeakRss.now()
        server_rss = process_peak_rss_mb(pids[1])
    for name, run in (("first run (every verdict new)", first), ("steady run (nothing changed)", steady)):
        counts = Counter(v.verdict.value for v in run.results)
        print(f"check-freshness, {name}: {run.seconds:.2f}s as the server recorded the run (the call "
              f"{run.call_seconds:.2f}s), {len(run.results) / run.seconds:.0f} images/s, "
              f"{run.state}, {dict(counts)}; {run.task_runs} task runs; CPU {run.cpu.text()}")
    loop_counts = Counter(v.verdict.value for v in loop_verdicts)
    print(f"sequential loop: {loop_seconds:.2f}s, {len(loop_verdicts) / loop_seconds:.0f} images/s, "
          f"{dict(loop_counts)}; CPU {loop_cpu.text()}")
    print(f"peak RSS (getrusage, read before the services stopped): this process {rss.self_mb:.0f} MB (the flows "
          f"and the loop ran in it), largest child {rss.children_mb:.0f} MB; Prefect server {server_rss:.0f} MB "
          "(shared infrastructure, reported apart)")
    print(result_line("RESULT", images=len(first.results), seconds=first.seconds,
                      images_per_s=len(first.results) / first.seconds,
                      speedup_vs_sequential=loop_seconds / first.seconds, peak_rss_mb=rss.peak_mb))


if __name__ == "__main__":
    main()
