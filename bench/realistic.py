"""scan-and-attest on work the size of real work: Trivy alone vs the flow, on real-sized images and a real-sized DB.

    python bench/realistic.py                                   # 100 images, 8 scans at once, a local Trivy server
    python bench/realistic.py --mode standalone                 # every scan a Trivy of its own
    python bench/realistic.py --scaling --images 24             # the table: 1, 2, 4, 8 at once, both modes
    python bench/realistic.py --images 4 --concurrency 2        # CI smoke

Builds the images of `_realistic` (Debian, ~1,600 packages, ~27,000 files in four layers, ~155 MB unpacked, every
layer distinct, so each scan is a first scan) in a throwaway registry, and the DB (~200,000 advisories over ~2,400
packages), then measures, each from a cache holding only the DB: (a) Trivy alone, the exact command
`TrivyScanner.command()` builds, in the same mode (a local `trivy server` started and stopped around the phase, or
standalone) on every image at the same parallelism, reading each report as the flow does; (b) the scan-and-attest
flow on a real Prefect server (the run's duration as the server records it). CPU is metered per process: this one
(where the flow runs; vulnattest's own share measured in the stage tasks, the rest is Prefect's client engine),
the Trivy processes (clients and server), the registry and the Prefect server.

The last line is ``RESULT failed=<n> throughput_ratio=<(a)/(b) time> own_cpu_ms_per_image=<n>
prefect_client_cpu_ms_per_image=<n> prefect_server_cpu_ms_per_image=<n> task_runs_per_image=<n>
peak_rss_mb_flow=<n> peak_rss_mb_trivy=<n>``. No timing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _realistic import layer_bodies, push_fleet, universe, write_db
from _support import (  # sets the benchmarks' Prefect logging default before Prefect loads
    CpuMeter,
    PeakRss,
    TimedFlowRun,
    percentile,
    pid_of,
    prefect_server,
    quiesce,
    require_tools,
    reset_peak_rss,
    result_line,
    self_peak_rss_mb,
    workspace,
)

from vulnattest.demo.registry import LocalRegistry
from vulnattest.images import ImageRef
from vulnattest.registry import OCI_MANIFEST, ResolvedImage
from vulnattest.scanners.trivy import TrivyScanner
from vulnattest.signing.keyfile import generate_keypair


@dataclass(frozen=True)
class Phase:
    """One timed phase: wall seconds, each scan's seconds (a), CPU, and (b) the flow run."""

    seconds: float
    per_scan: list[float]
    cpu: CpuMeter
    flow: TimedFlowRun | None = None
    own_cpu: float = 0.0
    own_by_stage: dict[str, float] | None = None


def arguments() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help="distinct images (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="scans at once (default 8)")
    parser.add_argument("--mode", choices=("local", "standalone"), default="local",
                        help="scanner.trivy.server: a local Trivy server (default) or standalone scans")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure (a) and (b) this many times, taking turns at going first (default 1)")
    parser.add_argument("--scaling", action="store_true",
                        help="measure at 1, 2, 4 and 8 scans at once, in both modes, and print the table")
    parser.add_argument("--workdir", type=Path, help="keep the registry, caches and reports here (default: a temp dir)")
    return parser.parse_args()


def fresh_cache(template: Path, root: Path, name: str) -> Path:
    """A Trivy cache holding only the DB: no layer analysed yet."""
    cache = root / name
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(template / "db", cache / "db")
    return cache


def trivy_alone(cache: Path, mode: str, images: list[ResolvedImage], concurrency: int, insecure: str,
                pids: tuple[int, int]) -> Phase:
    """(a): the scanner's exact command on every image, `concurrency` at a time, with the server (if any) started
    and stopped inside the phase, as the flow does."""
    cpu = CpuMeter.read(*pids)
    started = time.perf_counter()
    scanner = TrivyScanner(cache_dir=cache, offline=True, server=mode, insecure_registries=frozenset({insecure}))
    scanner.open()

    def scan(image: ResolvedImage) -> float:
        begun = time.perf_counter()
        done = subprocess.run(scanner.command(image), capture_output=True, check=False, env=scanner.environment())
        if done.returncode != 0:
            raise RuntimeError(f"trivy failed on {image.scan_ref}: {done.stderr.decode()[-2000:]}")
        return time.perf_counter() - begun

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            per_scan = list(pool.map(scan, images))
    finally:
        scanner.close()
    return Phase(time.perf_counter() - started, per_scan, CpuMeter.read(*pids) - cpu)


def flow_run(config: Path, pids: tuple[int, int]) -> Phase:
    """(b): the flow in this process, timed as the server records it; vulnattest's own CPU read from the tasks."""
    from flows.scan_and_attest import scan_and_attest
    from tasks.stages import OWN_CPU

    before = dict(OWN_CPU.by_stage)
    run = TimedFlowRun.of(lambda: scan_and_attest(config_path=str(config), return_state=True), pids)
    per_scan = [o.seconds.get("scan", 0.0) for o in run.results]
    by_stage = {stage: seconds - before.get(stage, 0.0) for stage, seconds in OWN_CPU.by_stage.items()}
    return Phase(run.seconds, per_scan, run.cpu, run, sum(by_stage.values()), by_stage)


def write_config(path: Path, refs: list[str], registry: str, cache: Path, key: Path, concurrency: int,
                 mode: str) -> Path:
    """The fleet config the flow runs with."""
    path.write_text(yaml.safe_dump({
        "images": refs,
        "registries": {registry: {"insecure": True}},
        "scanner": {"trivy": {"cache_dir": str(cache), "offline": True, "server": mode, "timeout": "30m"}},
        "store": {"url": (path.parent / "reports").as_uri()},
        "signing": {"key": str(key)},
        "concurrency": concurrency,
        "image_timeout": "2h",
    }))
    return path


def main() -> None:
    """Build the fleet, measure, print the report and the RESULT line (or the scaling table)."""
    args = arguments()
    require_tools(trivy=True)
    title = (f"realistic benchmark: {args.images} images, "
             + ("scaling 1-8, both modes" if args.scaling else f"concurrency {args.concurrency}, mode {args.mode}"))
    with workspace(args.workdir, title) as root:
        world = universe()
        advisories = write_db(root / "db-template", world)
        key, _ = generate_keypair(root / "keys")
        with LocalRegistry(root / "registry") as registry, prefect_server() as server:
            client = registry.client()
            started = time.perf_counter()
            bodies = layer_bodies(world)
            pushed = push_fleet(client, bodies, args.images)
            client.close()
            print(f"fleet: {args.images} images of {sum(b.files for b in bodies)} files, "
                  f"{sum(len(b.tar) for b in bodies) / 1e6:.0f} MB unpacked, "
                  f"{sum(len(b.gzipped) for b in bodies) / 1e6:.0f} MB compressed, {len(world.packages)} packages "
                  f"from {len(world.sources)} sources; {advisories} advisories in the DB; built and pushed in "
                  f"{time.perf_counter() - started:.0f} s")
            del bodies
            gc.collect()
            refs = [f"{registry.host}/{repository}:1.0" for repository, _ in pushed]
            resolved = [ResolvedImage(ImageRef.parse(f"{registry.host}/{repository}@{digest}"), digest, OCI_MANIFEST,
                                      digest) for repository, digest in pushed]
            pids = (pid_of(registry), pid_of(server))
            settings = [(c, m) for m in ("local", "standalone") for c in (1, 2, 4, 8)] if args.scaling else [
                (args.concurrency, args.mode)]
            rows = []
            for concurrency, mode in settings:

                def measure_a(concurrency: int = concurrency, mode: str = mode) -> Phase:
                    cache = fresh_cache(root / "db-template", root, "cache-trivy")
                    return trivy_alone(cache, mode, resolved, concurrency, registry.host, pids)

                def measure_b(concurrency: int = concurrency, mode: str = mode) -> Phase:
                    cache = fresh_cache(root / "db-template", root, "cache-flow")
                    shutil.rmtree(root / "reports", ignore_errors=True)
                    config = write_config(root / "fleet.yaml", refs, registry.host, cache, key, concurrency, mode)
                    reset_peak_rss()
                    return flow_run(config, pids)

                for round_ in range(args.rounds):
                    phases: dict[str, Phase] = {}
                    for name in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                        quiesce(*pids)
                        phases[name] = measure_a() if name == "a" else measure_b()
                    a, b = phases["a"], phases["b"]
                    rows.append((concurrency, mode, a, b, self_peak_rss_mb(), PeakRss.now().children_mb))
                    print_round(args.images, concurrency, mode, a, b)
    if args.scaling:
        print_table(args.images, rows)
    else:
        print_result(args.images, rows)


def print_round(images: int, concurrency: int, mode: str, a: Phase, b: Phase) -> None:
    """One setting's figures."""
    assert b.flow is not None
    failed = sum(not o.ok for o in b.flow.results)
    print(f"{mode}, {concurrency} at once: (a) trivy alone {a.seconds:.1f}s ({images / a.seconds * 60:.1f} images/min, "
          f"one scan p50 {percentile(a.per_scan, 50):.1f}s p95 {percentile(a.per_scan, 95):.1f}s); (b) the flow "
          f"{b.seconds:.1f}s ({images / b.seconds * 60:.1f} images/min, scan stage p50 "
          f"{percentile(b.per_scan, 50):.1f}s; {b.flow.state}, {failed} failed); throughput ratio "
          f"{a.seconds / b.seconds:.3f}")
    for name, phase in (("(a)", a), ("(b)", b)):
        print(f"    CPU {name} {phase.cpu.text()}")
    if b.own_by_stage:
        print("    vulnattest's own CPU per image, by stage: " + ", ".join(
            f"{stage} {seconds / images * 1000:.1f} ms" for stage, seconds in b.own_by_stage.items()))
    own = b.own_cpu / images * 1000
    client = (b.cpu.own - b.own_cpu) / images * 1000
    print(f"    per image: vulnattest's own work {own:.1f} ms, Prefect's client engine and the flow around it "
          f"{client:.1f} ms, the Prefect server {b.cpu.server / images * 1000:.1f} ms, the registry "
          f"{(b.cpu.registry - a.cpu.registry) / images * 1000:+.1f} ms more than (a), Trivy "
          f"{(b.cpu.children - a.cpu.children) / images * 1000:+.1f} ms more than (a); "
          f"{b.flow.task_runs / images:.1f} task runs per image")
    for failure in sorted({f"{o.failed_stage}: {o.error}" for o in b.flow.results if not o.ok})[:5]:
        print(f"    failed at {failure}")


def print_result(images: int, rows: list[tuple[int, str, Phase, Phase, float, float]]) -> None:
    """The RESULT line: medians over the rounds (the ratio taken within each round, where (a) and (b) ran side by
    side), failures summed, peaks the largest."""

    def median(value: Callable[[Phase, Phase], float]) -> float:
        return statistics.median(value(a, b) for _, _, a, b, _, _ in rows)

    print(result_line(
        "RESULT", failed=sum(sum(not o.ok for o in b.flow.results) for _, _, _, b, _, _ in rows if b.flow),
        throughput_ratio=median(lambda a, b: a.seconds / b.seconds),
        own_cpu_ms_per_image=median(lambda a, b: b.own_cpu / images * 1000),
        prefect_client_cpu_ms_per_image=median(lambda a, b: (b.cpu.own - b.own_cpu) / images * 1000),
        prefect_server_cpu_ms_per_image=median(lambda a, b: b.cpu.server / images * 1000),
        task_runs_per_image=median(lambda a, b: (b.flow.task_runs if b.flow else 0) / images),
        peak_rss_mb_flow=max(row[4] for row in rows), peak_rss_mb_trivy=max(row[5] for row in rows),
    ))


def print_table(images: int, rows: list[tuple[int, str, Phase, Phase, float, float]]) -> None:
    """The scaling table, as README carries it."""
    print("\n| mode | at once | Trivy alone (images/min) | one scan p50 (s) | flow (images/min) | throughput ratio | "
          "CPU busy (of 2 cores) |\n|---|---|---|---|---|---|---|")
    for concurrency, mode, a, b, _, _ in rows:
        busy = a.cpu.total / a.seconds
        print(f"| {mode} | {concurrency} | {images / a.seconds * 60:.1f} | {percentile(a.per_scan, 50):.1f} | "
              f"{images / b.seconds * 60:.1f} | {a.seconds / b.seconds:.3f} | {busy:.2f} |")
    ratios = [a.seconds / b.seconds for _, _, a, b, _, _ in rows]
    print(f"median throughput ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
