"""How much vulnattest adds on top of the scanner: Trivy alone vs the scan-and-attest flow, same images, same flags.

    python bench/fleet.py                          # 200 images, concurrency 4, 3 rounds
    python bench/fleet.py --images 10 --rounds 1   # CI smoke

Builds N distinct images in a throwaway registry (shared Alpine and Debian base and runtime layers with ~300
packages each, one app layer per image) and an offline Trivy DB with thousands of advisories, then times, in each
round and each from an empty Trivy layer cache: (a) Trivy alone, the exact command `TrivyScanner.command()` builds,
on every image at the same parallelism; (b) the scan-and-attest flow on a real Prefect server, as long as the server
records its run (Running to Completed; the in-process call's fixed extra is printed beside it). Each phase starts on
a quiet machine (dirty pages written, services idle) and rounds alternate which goes first. Last, (c) meters the
registry requests every image needs (resolve, attach) made alone, which puts a floor under the ratio while the
registry runs on the same cores. This machine's speed drifts from minute to minute, so the ratio is taken within
each round, where (a) and (b) ran side by side, and RESULT gives the median of the rounds' ratios (and of (b)'s
throughput). The last line is
``RESULT overhead_ratio=<b/a> images_per_min=<n> peak_rss_mb=<n> task_runs_per_image=<n>``.
No timing is asserted: this is a measurement, run by hand or as a CI smoke.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fleet import build_fleet, distro, write_db
from _support import (  # sets the benchmarks' Prefect logging default before Prefect loads
    CpuMeter,
    PeakRss,
    TimedFlowRun,
    percentile,
    pid_of,
    prefect_server,
    process_cpu_seconds,
    process_peak_rss_mb,
    quiesce,
    require_tools,
    result_line,
    workspace,
)

from vulnattest.attestations import VULN_PREDICATE_TYPE, sign_statement
from vulnattest.attestations.cosign import CosignAttacher, read_attestations
from vulnattest.demo.registry import LocalRegistry
from vulnattest.images import ImageRef
from vulnattest.outcomes import STAGES
from vulnattest.registry import RegistryClient, ResolvedImage, resolve
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair


@dataclass(frozen=True)
class TrivyRun:
    """(a): wall time of Trivy alone over the fleet, and each scan's time."""

    seconds: float
    per_image: list[float]
    cpu: CpuMeter


@dataclass(frozen=True)
class RegistryWork:
    """(c): CPU seconds the registry requests of every image cost when made alone, one image at a time, nothing
    else running: resolving its tag and attaching a freshly signed envelope (cosign's layout with ``--replace``,
    read back): the registry's, and this process's (vulnattest's HTTP client, signing excluded)."""

    registry: float
    client: float


def arguments() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="distinct images in the fleet (default 200)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="scans at once, for Trivy alone and for the flow (default 4, the config default)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure (a) and (b) this many times, each from an empty layer cache, taking turns at "
                             "going first; RESULT gives the median of the rounds' ratios (default 3)")
    parser.add_argument("--workdir", type=Path, help="keep the registry, caches and reports here (default: a temp dir)")
    return parser.parse_args()


def trivy_alone(scanner: TrivyScanner, images: list[ResolvedImage], concurrency: int, pids: tuple[int, int]
                ) -> TrivyRun:
    """Run the scanner's exact command on every image, `concurrency` at a time, reading its report as the flow does."""

    def scan(image: ResolvedImage) -> float:
        started = time.perf_counter()
        done = subprocess.run(scanner.command(image), capture_output=True, check=False,
                              env=scanner.environment())
        if done.returncode != 0:
            raise RuntimeError(f"trivy failed on {image.scan_ref}: {done.stderr.decode()[-2000:]}")
        return time.perf_counter() - started

    cpu = CpuMeter.read(*pids)
    started = time.perf_counter()
    scanner.open()  # the local Trivy server, started and stopped within the phase as the flow does
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            per_image = list(pool.map(scan, images))
    finally:
        scanner.close()
    return TrivyRun(time.perf_counter() - started, per_image, CpuMeter.read(*pids) - cpu)


def scan_and_attest_run(config: Path, pids: tuple[int, int]) -> TimedFlowRun:
    """Run the flow in this process against the server and time it."""
    from flows.scan_and_attest import scan_and_attest

    return TimedFlowRun.of(lambda: scan_and_attest(config_path=str(config), return_state=True), pids)


def registry_work(host: str, refs: list[str], key: Path, registry_pid: int) -> RegistryWork:
    """Resolve and attach every image again, alone, and meter the registry and this process."""
    client = RegistryClient(host, insecure=True)
    signer = KeyFileSigner.from_file(key)
    envelopes = []
    for ref in refs:  # not metered: each image's attested statement signed again (a fresh signature, a new blob)
        attached = read_attestations(client, resolve(client, ImageRef.parse(ref)))[0]
        envelopes.append(sign_statement(attached.envelope(ref).payload, signer))
    attacher = CosignAttacher()
    quiesce(registry_pid)
    registry, own = process_cpu_seconds(registry_pid), time.process_time()
    for ref, envelope in zip(refs, envelopes, strict=True):
        attacher.attach(client, resolve(client, ImageRef.parse(ref)), envelope, VULN_PREDICATE_TYPE)
    work = RegistryWork(process_cpu_seconds(registry_pid) - registry, time.process_time() - own)
    client.close()
    return work


def fresh_cache(template: Path, root: Path, name: str) -> Path:
    """A Trivy cache holding only the DB: no layer has been analysed yet."""
    cache = root / name
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(template / "db", cache / "db")
    return cache


def write_config(path: Path, refs: list[str], registry: str, cache: Path, key: Path, concurrency: int) -> Path:
    """The fleet config the flow runs with."""
    path.write_text(yaml.safe_dump({
        "images": refs,
        "registries": {registry: {"insecure": True}},
        "scanner": {"trivy": {"cache_dir": str(cache), "offline": True}},
        "store": {"url": (path.parent / "reports").as_uri()},
        "signing": {"key": str(key)},
        "concurrency": concurrency,
    }))
    return path


def main() -> None:
    """Build the fleet, measure (a) and (b) for each round, print the report and the RESULT line."""
    args = arguments()
    require_tools(trivy=True)
    title = f"fleet benchmark: {args.images} images, concurrency {args.concurrency}, {args.rounds} round(s)"
    with workspace(args.workdir, title) as root:
        measure(args, root)


def measure(args: argparse.Namespace, root: Path) -> None:
    """Build the fleet in `root`, measure (a) and (b) for each round, print the report."""
    distros = [distro("alpine"), distro("debian")]
    advisories = write_db(root / "db-template", distros)
    key, _ = generate_keypair(root / "keys")
    with LocalRegistry(root / "registry") as registry, prefect_server() as server:
        client = registry.client()
        fleet = build_fleet(client, args.images, distros)
        client.close()
        kinds = Counter(image.distro for image in fleet)
        print(f"fleet: {', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}; per distro 1 base and "
              f"{len(distros[0].runtimes)} runtime layers shared, ~{len(distros[0].runtimes[0])} packages each, "
              f"1 app layer per image; {advisories} advisories in the DB")
        refs = [f"{registry.host}/{image.repository}:{image.tag}" for image in fleet]
        resolved = [ResolvedImage(ImageRef.parse(f"{registry.host}/{image.repository}@{image.digest}"), image.digest,
                                  "application/vnd.oci.image.manifest.v1+json", image.digest) for image in fleet]
        pids = (pid_of(registry), pid_of(server))
        alone: list[TrivyRun] = []
        flows: list[TimedFlowRun] = []
        for round_ in range(1, args.rounds + 1):

            def measure_a() -> None:
                cache = fresh_cache(root / "db-template", root, "cache-trivy")
                scanner = TrivyScanner(cache_dir=cache, offline=True, insecure_registries=frozenset({registry.host}))
                alone.append(trivy_alone(scanner, resolved, args.concurrency, pids))

            def measure_b() -> None:
                cache = fresh_cache(root / "db-template", root, "cache-flow")
                config = write_config(root / "fleet.yaml", refs, registry.host, cache, key, args.concurrency)
                flows.append(scan_and_attest_run(config, pids))

            for step in (measure_a, measure_b) if round_ % 2 else (measure_b, measure_a):
                quiesce(*pids)
                step()
            a, b = alone[-1], flows[-1]
            print(f"round {round_}: (a) trivy alone {a.seconds:.1f}s, (b) scan-and-attest {b.seconds:.1f}s "
                  f"({b.state}; the call {b.call_seconds:.1f}s), ratio {b.seconds / a.seconds:.2f} "
                  f"({b.call_seconds / a.seconds:.2f} by the call); CPU seconds (a) {a.cpu.total:.1f}, Trivy's "
                  f"{a.cpu.children:.1f}, (b) {b.cpu.total:.1f}, Trivy's {b.cpu.children:.1f}")
        rss = PeakRss.now()  # before the services stop: the server and registry are infrastructure, not the run
        server_rss = process_peak_rss_mb(pids[1])
        work = registry_work(registry.host, refs, key, pids[0])
    report(args, alone, flows, work, rss, server_rss)


def report(args: argparse.Namespace, alone: list[TrivyRun], flows: list[TimedFlowRun], work: RegistryWork,
           rss: PeakRss, server_rss: float) -> None:
    """Print what was measured, last the RESULT line."""
    a_seconds = statistics.median(a.seconds for a in alone)
    b_seconds = statistics.median(b.seconds for b in flows)
    ratio = statistics.median(b.seconds / a.seconds for a, b in zip(alone, flows, strict=True))
    call_ratio = statistics.median(b.call_seconds / a.seconds for a, b in zip(alone, flows, strict=True))
    last = flows[-1]
    attested = sum(o.ok for o in last.results)
    failures = Counter(f"{o.failed_stage}: {o.error}" for o in last.results if not o.ok)
    per_image_a = alone[-1].per_image
    print(f"(a) trivy alone: {a_seconds:.1f}s, {args.images / a_seconds * 60:.0f} images/min; one scan p50 "
          f"{percentile(per_image_a, 50):.2f}s p95 {percentile(per_image_a, 95):.2f}s")
    call_seconds = statistics.median(b.call_seconds for b in flows)
    print(f"(b) scan-and-attest: {b_seconds:.1f}s as the server recorded the run, {args.images / b_seconds * 60:.0f} "
          f"images/min; {attested} of {len(last.results)} attested ({last.state}); the in-process call took "
          f"{call_seconds:.1f}s: Prefect's client engine creates the run before and joins its heartbeat thread "
          "(0-1 s) after")
    print(f"    (medians) ratio of the rounds {ratio:.2f}, by the call {call_ratio:.2f}; ratio of the medians "
          f"{b_seconds / a_seconds:.2f}")
    for failure, n in failures.most_common(5):
        print(f"    {n} failed at {failure}")
    findings = {kind: [sum(o.counts.values()) for o in last.results if f"/{kind}/" in o.image]
                for kind in ("alpine", "debian")}
    sizes = [Path(o.report_uri.removeprefix("file://")).stat().st_size / 1024 for o in last.results
             if o.report_uri and Path(o.report_uri.removeprefix("file://")).exists()]
    print("    findings per image p50: " + ", ".join(f"{kind} {percentile(v, 50):.0f}" for kind, v in findings.items())
          + f"; Trivy report p50 {percentile(sizes, 50):.0f} KiB, p95 {percentile(sizes, 95):.0f} KiB")
    print(f"    {'stage':<8} {'p50 s':>8} {'p95 s':>8} {'sum s':>8}")
    for stage in STAGES:
        values = [o.seconds[stage] for o in last.results if stage in o.seconds]
        print(f"    {stage:<8} {percentile(values, 50):>8.4f} {percentile(values, 95):>8.4f} {sum(values):>8.2f}")
    per_image = last.task_runs / max(len(last.results), 1)
    print(f"    task runs: {last.task_runs} ({per_image:.2f} per image), all recorded by the server "
          f"{last.settle_seconds:.1f}s after the flow returned")
    print(f"CPU (a) {alone[-1].cpu.text()}")
    print(f"CPU (b) {last.cpu.text()}")
    print(f"    the Prefect server spent {last.cpu.server / max(len(last.results), 1) * 1000:.0f} ms of CPU per "
          f"image; its peak RSS {server_rss:.0f} MB (shared infrastructure, reported apart)")
    a_cpu = statistics.median(a.cpu.total for a in alone)
    print(f"(c) each image's registry requests alone (resolve, then attach: 8 requests), one at a time: the registry "
          f"{work.registry / args.images * 1000:.1f} ms and vulnattest's client {work.client / args.images * 1000:.1f} "
          f"ms of CPU per image, {work.registry + work.client:.1f}s for the fleet; against (a)'s {a_cpu:.1f} CPU "
          f"seconds, a floor under the ratio while the registry shares these cores of {1 + work.registry / a_cpu:.2f} "
          f"(the registry's share) and {1 + (work.registry + work.client) / a_cpu:.2f} (with the client's)")
    print(f"peak RSS (getrusage, read before the services stopped): this process {rss.self_mb:.0f} MB (the "
          f"flow ran in it), largest child {rss.children_mb:.0f} MB (RUSAGE_CHILDREN: the biggest Trivy process)")
    print(result_line("RESULT", overhead_ratio=ratio, images_per_min=args.images / b_seconds * 60,
                      peak_rss_mb=rss.peak_mb, task_runs_per_image=per_image))


if __name__ == "__main__":
    main()
