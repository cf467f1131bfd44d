"""What both benchmarks share: the services they start, the clocks and meters they read, the lines they print."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

# the runs still log to the Prefect API as in production; only the console copy would bury the report
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

from deployments.server import LocalPrefectServer
from vulnattest.demo.registry import INSTALL_HINT, LocalRegistry

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

PREFECT_CHOICE = (
    "Prefect: a LocalPrefectServer (`prefect server start`, SQLite) in its own process, as a one-machine "
    "deployment runs it, so the server's CPU competes with the scans as it would in production; "
    "prefect_test_harness runs the same API with test settings and takes longer to start"
)
_TICKS = os.sysconf("SC_CLK_TCK")


def require(binary: str, hint: str) -> None:
    """Exit with `hint` when `binary` is not on PATH."""
    if shutil.which(binary) is None:
        sys.exit(f"{binary} not found: {hint}")


def require_tools(*, trivy: bool) -> None:
    """Exit with an install hint unless the registry (and Trivy) are installed."""
    require("docker-registry", INSTALL_HINT)
    if trivy:
        require("trivy", "install it with `pip install -e '.[trivy]'`")


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(max(round(q), 1), 99) - 1]


@dataclass(frozen=True)
class PeakRss:
    """Peak resident memory, from getrusage: this process, and the largest child it has waited for."""

    self_mb: float
    children_mb: float

    @classmethod
    def now(cls) -> PeakRss:
        """Read both (Linux reports ru_maxrss in KiB)."""
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return cls(own, children)

    @property
    def peak_mb(self) -> float:
        """The larger of the two: no one process of the benchmark grew past this."""
        return max(self.self_mb, self.children_mb)


@dataclass(frozen=True)
class CpuMeter:
    """CPU seconds used so far by this process, its waited-for children (the scans), the registry and the server."""

    own: float
    children: float
    registry: float
    server: float

    @classmethod
    def read(cls, registry_pid: int, server_pid: int) -> CpuMeter:
        """Read every meter now."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime,
                   process_cpu_seconds(registry_pid), process_cpu_seconds(server_pid))

    def __sub__(self, other: CpuMeter) -> CpuMeter:
        return CpuMeter(self.own - other.own, self.children - other.children, self.registry - other.registry,
                        self.server - other.server)

    @property
    def total(self) -> float:
        """All of it."""
        return self.own + self.children + self.registry + self.server

    def text(self) -> str:
        """E.g. ``52.1s: scanner 40.2, this process 6.3, registry 3.1, Prefect server 2.5``."""
        return (f"{self.total:.1f}s: scanner processes {self.children:.1f}, this process {self.own:.1f}, "
                f"registry {self.registry:.1f}, Prefect server {self.server:.1f}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_peak_rss_mb(pid: int) -> float:
    """The peak resident set of a running process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    """Start this process's peak resident set (VmHWM) afresh from its current size (Linux: clear_refs 5), so a phase's
    peak is its own, not that of building the images before it."""
    Path("/proc/self/clear_refs").write_text("5")


def self_peak_rss_mb() -> float:
    """This process's peak resident set since the last `reset_peak_rss` (or its start), in MiB."""
    return process_peak_rss_mb(os.getpid())


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@contextmanager
def workspace(workdir: Path | None, title: str) -> Iterator[Path]:
    """The benchmark's directory (a temporary one, removed at the end, unless `workdir`), with a ``registry``
    directory in it, after printing `title` and the machine's state."""
    with ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vulnattest-bench-")))
        (root / "registry").mkdir(parents=True, exist_ok=True)
        print(f"{title}, {os.cpu_count()} CPUs, load average {load_average()}")
        print(PREFECT_CHOICE)
        yield root


@contextmanager
def prefect_server() -> Iterator[LocalPrefectServer]:
    """A LocalPrefectServer with this process's Prefect client pointed at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with LocalPrefectServer() as server, temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server


def pid_of(service: LocalPrefectServer | LocalRegistry) -> int:
    """The process id of a running server or registry (the benchmark meters the process itself)."""
    process = service.process
    if process is None:
        raise RuntimeError(f"{type(service).__name__} is not running")
    return process.pid


def count_task_runs(client: SyncPrefectClient, flow_run_id: UUID) -> int:
    """How many task runs the server has recorded for a flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    total, page = 0, 200
    while True:
        runs = client.read_task_runs(flow_run_filter=flow_filter, limit=page, offset=total)
        total += len(runs)
        if len(runs) < page:
            return total


def settled_task_runs(flow_run_id: UUID, timeout: float = 120.0) -> tuple[int, float]:
    """The task-run count once the server has recorded them all (it does so from events, after the flow returns),
    and how long that took; the count stops changing when the backlog is drained."""
    from prefect.client.orchestration import get_client

    started = time.monotonic()
    last, stable_since = -1, started
    with get_client(sync_client=True) as client:
        while True:
            count = count_task_runs(client, flow_run_id)
            now = time.monotonic()
            if count != last:
                last, stable_since = count, now
            elif now - stable_since >= 2.0 or now - started > timeout:
                return count, stable_since - started
            time.sleep(0.25)


@dataclass(frozen=True)
class TimedFlowRun:
    """One flow run: its duration as the Prefect server records it and its UI shows it (Running to its final
    state), the in-process call's, its per-image results, its task runs once the server recorded them all, and the
    CPU it cost (read after that, so it includes the server's work on the run's events).

    The call takes longer than the run by a fixed amount that does not grow with the fleet: the client engine
    creates the run first (and imports its API models the first time), and after the final state it joins its
    heartbeat thread, which sleeps in one-second steps (0-1 s).
    """

    seconds: float
    call_seconds: float
    results: list[Any]
    state: str
    task_runs: int
    settle_seconds: float
    cpu: CpuMeter

    @classmethod
    def of(cls, call: Callable[[], Any], pids: tuple[int, int]) -> TimedFlowRun:
        """Run `call` (a flow called with ``return_state=True``) and time it."""
        from prefect.client.orchestration import get_client

        from flows import results_of

        cpu = CpuMeter.read(*pids)
        started = time.perf_counter()
        state = call()
        call_seconds = time.perf_counter() - started
        flow_run_id = state.state_details.flow_run_id
        task_runs, settle = settled_task_runs(flow_run_id)
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        if run.start_time is None or run.end_time is None:
            raise RuntimeError(f"flow run {flow_run_id} has no recorded start or end")
        return cls(float((run.end_time - run.start_time).total_seconds()), call_seconds, results_of(state),
                   state.name, task_runs, settle, CpuMeter.read(*pids) - cpu)


def quiesce(*pids: int, timeout: float = 20.0) -> None:
    """Let the machine go quiet before the next timed phase, so it pays as little as can be for the one before: write
    the page cache's dirty data to disk and wait until `pids` (the registry, the Prefect server finishing a run's
    events) use under 5% of a core."""
    os.sync()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(process_cpu_seconds(pid) for pid in pids)
        time.sleep(0.5)
        if sum(process_cpu_seconds(pid) for pid in pids) - before < 0.025:
            return


def result_line(name: str, **values: object) -> str:
    """``RESULT k=v …`` with floats at two decimals."""
    parts = [f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    return f"{name} " + " ".join(parts)
