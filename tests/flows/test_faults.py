"""The fault matrix: a fault-injecting proxy in front of the real registry, the real S3 server, the webhook receiver
and the Prefect API, and a scanner that crashes, babbles or hangs. Each test ends with every image in a known state:
attested (one vuln attestation, replaced in place) or failed at a named stage with a message that says what to do,
and never attested from a report that was not stored and read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from typer.testing import CliRunner

import flows.scan_and_attest as scan_flow
from flows import results_of
from tests.conftest import ConfigWriter, task_runs
from tests.faultproxy import Fault, FaultProxy, TcpProxy
from tests.flows.test_scan_and_attest import _fleet, _vuln_layers
from tests.integration.test_freshness import WebhookReceiver
from vulnattest.attestations.cosign import attestation_tag
from vulnattest.cli import app
from vulnattest.demo.registry import LocalRegistry
from vulnattest.images import ImageRef
from vulnattest.outcomes import ImageOutcome
from vulnattest.registry import resolve

pytestmark = pytest.mark.usefixtures("prefect_server")

UNAVAILABLE = b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable","detail":null}]}'


@pytest.fixture
def proxy(registry: LocalRegistry) -> Any:
    """A fault proxy in front of the session registry (images are named by its host)."""
    with FaultProxy(registry.host) as running:
        yield running


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real stage tasks and retry conditions, without the production backoff between task retries."""
    for name in ("scan", "store", "verify", "attest"):
        monkeypatch.setattr(scan_flow, name, getattr(scan_flow, name).with_options(retry_delay_seconds=0))


def through(proxy: FaultProxy, refs: list[str], registry: LocalRegistry) -> list[str]:
    return [ref.replace(registry.host, proxy.host) for ref in refs]


def write(config_writer: ConfigWriter, proxy: FaultProxy, refs: list[str], **overrides: Any) -> Path:
    return config_writer.write(refs, registries={proxy.host: {"insecure": True, "timeout": "3s"}}, **overrides)


def attest(config: Path) -> tuple[Any, dict[str, ImageOutcome]]:
    state = scan_flow.scan_and_attest(config_path=str(config), return_state=True)
    return state, {o.image: o for o in results_of(state)}


def attestation_of(registry: LocalRegistry, ref: str) -> bool:
    client = registry.client()
    image = ImageRef.parse(ref)
    digest = resolve(client, image).digest
    return client.find_manifest(image.repository, attestation_tag(digest)) is not None


def runs_named(state: Any, expected: int, prefix: str) -> list[Any]:
    return [run for run in task_runs(state, expected) if run.name.startswith(prefix)]


# -- the registry ----------------------------------------------------------------------------------------------


def test_three_503s_for_every_kind_of_request_cost_nothing(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter
):
    refs = through(proxy, _fleet(registry, "f503", 5)[1:], registry)
    kinds = [("GET", r"/manifests/[^s]"), ("HEAD", r"/blobs/"), ("POST", r"/blobs/uploads/$"),
             ("GET", r"/manifests/sha256-.*\.att"), ("PUT", r"/manifests/sha256-.*\.att")]
    faults = [Fault.status_code(503, retry_after="1", body=UNAVAILABLE, times=3, method=m, path=p) for m, p in kinds]
    proxy.add(*faults)

    state, outcomes = attest(write(config_writer, proxy, refs, concurrency=1))

    assert state.is_completed(), state.message
    assert all(o.ok for o in outcomes.values())
    assert [f.applied for f in faults if f.method != "HEAD"] == [3, 3, 3, 3]
    assert [_vuln_layers(registry, ref.replace(proxy.host, registry.host)) for ref in refs] == [1] * 4


def test_a_429_is_retried_no_sooner_than_retry_after_says(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter
):
    [ref] = through(proxy, _fleet(registry, "f429", 2)[1:], registry)
    proxy.add(Fault.status_code(429, retry_after="2", times=1, method="PUT", path=r"/manifests/sha256-.*\.att"))

    state, outcomes = attest(write(config_writer, proxy, [ref]))

    assert state.is_completed() and outcomes[ref].ok
    puts = [t for t, method, path in proxy.times if method == "PUT" and path.endswith(".att")]
    assert len(puts) == 2 and puts[1] - puts[0] >= 2.0


def test_resets_and_a_hung_request_are_retried_on_their_own(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter
):
    refs = through(proxy, _fleet(registry, "freset", 3)[1:], registry)
    proxy.add(Fault.reset(times=2, method="GET", path=r"/manifests/v1$"),
              Fault.hang(30, times=1, method="GET", path=r"/manifests/v1$"))

    state, outcomes = attest(write(config_writer, proxy, refs))

    assert state.is_completed(), state.message
    assert all(o.ok for o in outcomes.values())
    assert runs_named(state, 10, "scan ") and all(r.run_count == 1 for r in runs_named(state, 10, "scan "))


def test_trivy_failing_on_the_registrys_unavailable_answers_or_a_body_cut_short_is_retried(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter, no_backoff: None
):
    unavailable, cut = through(proxy, _fleet(registry, "ftrivy", 3)[1:], registry)
    repository = {ref: ImageRef.parse(ref).repository for ref in (unavailable, cut)}
    # as many as go-containerregistry retries inside Trivy: the first scan fails, the registry then serves again
    proxy.add(Fault.status_code(503, body=UNAVAILABLE, times=3, method="GET",
                                path=rf"{repository[unavailable]}/blobs/sha256:"),
              Fault.cut(times=1, method="GET", path=rf"{repository[cut]}/blobs/sha256:"))

    state, outcomes = attest(write(config_writer, proxy, [unavailable, cut], concurrency=1))

    assert state.is_completed(), state.message
    assert outcomes[unavailable].ok and outcomes[cut].ok
    scans = {run.name.split(" ")[1]: run.run_count for run in runs_named(state, 10, "scan ")}
    assert scans[unavailable] >= 2 and scans[cut] == 2  # retried, not judged permanent by Trivy's words


def test_an_att_manifest_the_registry_stored_but_answered_500_for_is_attested(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter
):
    [ref] = through(proxy, _fleet(registry, "f500", 2)[1:], registry)
    put_att = Fault.fail_after(500, times=None, method="PUT", path=r"/manifests/sha256-.*\.att")
    proxy.add(put_att)

    state, outcomes = attest(write(config_writer, proxy, [ref]))

    assert state.is_completed(), state.message
    assert outcomes[ref].ok
    assert put_att.applied >= 5  # every try answered 500; the read-back found the manifest in place
    assert _vuln_layers(registry, ref.replace(proxy.host, registry.host)) == 1


def test_a_registry_down_fails_every_image_at_scan_and_the_next_run_recovers(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter, no_backoff: None
):
    refs = through(proxy, _fleet(registry, "fdown", 3)[1:], registry)
    config = write(config_writer, proxy, refs)
    proxy.down = True

    wide = {"COLUMNS": "300"}  # one table row per line
    down = CliRunner().invoke(app, ["run", "--config", str(config)], env=wide)

    assert down.exit_code == 1
    assert "0 of 2 image(s) attested" in down.output
    assert "failed at scan" in down.output and "cannot reach" in down.output
    proxy.down = False
    assert not any(attestation_of(registry, ref.replace(proxy.host, registry.host)) for ref in refs)
    again = CliRunner().invoke(app, ["run", "--config", str(config)], env=wide)
    assert again.exit_code == 0, again.output
    assert "2 of 2 image(s) attested" in again.output


# -- the report store (S3) -------------------------------------------------------------------------------------


@pytest.fixture
def s3_proxy(s3_endpoint: str) -> Any:
    with FaultProxy(s3_endpoint.removeprefix("http://")) as running:
        yield running


def s3_config(config_writer: ConfigWriter, s3_proxy: FaultProxy, bucket: str, refs: list[str]) -> Path:
    boto3.client("s3", endpoint_url=f"http://{s3_proxy.upstream}", region_name="us-east-1").create_bucket(
        Bucket=bucket)
    return config_writer.write(refs, store={"url": f"s3://{bucket}/reports", "endpoint_url": s3_proxy.url,
                                            "region": "us-east-1", "timeout": "2s"})


def test_s3_5xx_a_hang_and_an_outage_past_the_request_retries_are_survived(
    registry: LocalRegistry, s3_proxy: FaultProxy, config_writer: ConfigWriter, no_backoff: None
):
    refs = _fleet(registry, "fs3", 4)[1:]
    config = s3_config(config_writer, s3_proxy, "faults-5xx", refs)
    first, second, third = (ImageRef.parse(ref).repository for ref in refs)
    s3_proxy.add(Fault.status_code(503, times=3, method="PUT", path=rf"/reports/.*{first}/"),
                 Fault.hang(30, times=1, method="GET", path=rf"/reports/.*{second}/"),
                 Fault.status_code(500, times=7, method="PUT", path=rf"/reports/.*{third}/"))

    state, outcomes = attest(config)

    assert state.is_completed(), state.message
    assert all(o.ok for o in outcomes.values())
    stores = {repository: run.run_count for run in runs_named(state, 15, "store ")
              for repository in (first, third) if f"/{repository}:" in run.name}
    assert stores == {first: 1, third: 2}  # boto3 retried each request 5 times; past that, the task once more
    assert [_vuln_layers(registry, ref) for ref in refs] == [1, 1, 1]


def test_a_report_altered_on_its_way_back_from_s3_is_never_attested(
    registry: LocalRegistry, s3_proxy: FaultProxy, config_writer: ConfigWriter
):
    [ref] = _fleet(registry, "fs3tamper", 2)[1:]
    config = s3_config(config_writer, s3_proxy, "faults-tamper", [ref])
    s3_proxy.add(Fault.alter(b"CVE-2099-0001", b"CVE-0000-0000", times=None, method="GET", path=r"/reports/"))

    state, outcomes = attest(config)

    assert state.is_failed()
    assert outcomes[ref].failed_stage == "verify"
    assert "does not match its scan" in (outcomes[ref].error or "") and "no attestation was made" in (
        outcomes[ref].error or "")
    assert not attestation_of(registry, ref)


def test_an_s3_outage_that_outlasts_every_retry_fails_the_image_at_store(
    registry: LocalRegistry, s3_proxy: FaultProxy, config_writer: ConfigWriter, no_backoff: None
):
    [ref] = _fleet(registry, "fs3down", 2)[1:]
    config = s3_config(config_writer, s3_proxy, "faults-down", [ref])
    s3_proxy.add(Fault.status_code(503, times=None, method="PUT", path=r"/reports/"))

    state, outcomes = attest(config)

    assert state.is_failed()
    assert outcomes[ref].failed_stage == "store"
    assert "cannot write s3://faults-down/reports/" in (outcomes[ref].error or "")
    assert "retry later" in (outcomes[ref].error or "")
    assert not attestation_of(registry, ref)


def test_a_store_that_cannot_be_written_fails_the_image_at_store_for_good(
    registry: LocalRegistry, config_writer: ConfigWriter
):
    [ref] = _fleet(registry, "fdisk", 2)[1:]
    blocked = config_writer.directory / "blocked"
    blocked.write_text("a file where the store's directory should be\n")

    state, outcomes = attest(config_writer.write([ref], store={"url": blocked.as_uri()}))

    assert state.is_failed()
    assert outcomes[ref].failed_stage == "store"
    assert f"cannot write {blocked}/reports" in (outcomes[ref].error or "")
    assert [run.run_count for run in runs_named(state, 3, "store ")] == [1]
    assert not attestation_of(registry, ref)


# -- the scanner -----------------------------------------------------------------------------------------------


def fake_trivy(directory: Path, scan_body: str) -> Path:
    """A `trivy` that is the real one for everything but scans, which run `scan_body` (sh)."""
    real = subprocess.run(["sh", "-c", "command -v trivy"], capture_output=True, text=True, check=True).stdout.strip()
    path = directory / "trivy"
    path.write_text(f"#!/bin/sh\nif [ \"$1\" != image ]; then exec {real} \"$@\"; fi\n"
                    + textwrap.dedent(scan_body))
    path.chmod(0o755)
    return path


def scanner_config(config_writer: ConfigWriter, refs: list[str], binary: Path, timeout: str = "10m") -> Path:
    trivy = {"path": str(binary), "cache_dir": str(config_writer.trivy_cache), "offline": True, "timeout": timeout}
    return config_writer.write(refs, scanner={"trivy": trivy})


def test_a_crashing_or_babbling_scanner_fails_its_image_at_scan_without_retries(
    registry: LocalRegistry, config_writer: ConfigWriter, tmp_path: Path
):
    [ref] = _fleet(registry, "fcrash", 2)[1:]
    crash = fake_trivy(tmp_path, "echo 'panic: runtime error: index out of range [3]' >&2\nexit 2\n")
    state, outcomes = attest(scanner_config(config_writer, [ref], crash))
    assert outcomes[ref].failed_stage == "scan"
    assert "a Go panic" in (outcomes[ref].error or "") and "index out of range" in (outcomes[ref].error or "")

    (tmp_path / "babble").mkdir()
    babble = fake_trivy(tmp_path / "babble", """
        for a in "$@"; do [ "$prev" = --output ] && echo 'WARN something, not JSON' > "$a"; prev="$a"; done
        exit 0
    """)
    state2, outcomes2 = attest(scanner_config(config_writer, [ref], babble))
    assert outcomes2[ref].failed_stage == "scan" and "not JSON" in (outcomes2[ref].error or "")
    for run_state in (state, state2):
        assert [run.run_count for run in runs_named(run_state, 1, "scan ")] == [1]
    assert not attestation_of(registry, ref)


def test_a_hung_scanner_is_stopped_at_its_timeout_once_with_its_children(
    registry: LocalRegistry, config_writer: ConfigWriter, tmp_path: Path
):
    [ref] = _fleet(registry, "fhang", 2)[1:]
    pids = tmp_path / "pids"
    hang = fake_trivy(tmp_path, f"sleep 600 &\necho $! >> {pids}\nsleep 600\n")
    started = time.monotonic()

    state, outcomes = attest(scanner_config(config_writer, [ref], hang, timeout="3s"))

    assert time.monotonic() - started < 40  # one timeout and its grace, not one per retry
    error = outcomes[ref].error or ""
    assert outcomes[ref].failed_stage == "scan"
    assert "did not finish scanning" in error and "within scanner.trivy.timeout (0:00:03)" in error
    assert "stopped it after 0:00:0" in error  # the time it really waited: the timeout and as much grace
    assert [run.run_count for run in runs_named(state, 1, "scan ")] == [1]
    for pid in pids.read_text().split():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


# -- concurrent runs and a killed run --------------------------------------------------------------------------


def test_file_locks_serialise_processes_whatever_their_temporary_directory(tmp_path: Path):
    held = tmp_path / "held"
    script = textwrap.dedent(f"""
        import sys, time
        from vulnattest.locks import FileLocks
        with FileLocks()("one image"):
            print(time.monotonic(), flush=True)
            if sys.argv[1] == "hold":
                open({str(held)!r}, "w").close()
                time.sleep(3)
    """)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    (tmp_path / "run").mkdir(mode=0o700)
    holder = subprocess.Popen([sys.executable, "-c", script, "hold"], stdout=subprocess.PIPE, text=True,
                              env={**env, "TMPDIR": str(tmp_path / "a")})
    while not held.exists():
        time.sleep(0.05)
    (tmp_path / "b").mkdir()
    waiter = subprocess.run([sys.executable, "-c", script, "wait"], capture_output=True, text=True, check=True,
                            env={**env, "TMPDIR": str(tmp_path / "b")})
    taken = float(holder.communicate()[0])
    assert float(waiter.stdout) - taken >= 2.5  # it waited for the other process's lock
    assert (tmp_path / "run" / "vulnattest" / "locks").is_dir()


def test_a_lock_directory_others_can_write_is_refused(tmp_path: Path):
    from vulnattest.errors import VulnattestError
    from vulnattest.locks import FileLocks

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(VulnattestError, match=r"is not this user's alone .*set attach_lock_dir"), \
            FileLocks(shared)("x"):
        pass


def _process_tree(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True, check=True).stdout.split()[2:]
    children: dict[int, list[int]] = {}
    for child, parent in zip(out[::2], out[1::2], strict=True):
        children.setdefault(int(parent), []).append(int(child))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo += children.get(current, [])
    return found - {pid}


def test_a_killed_run_leaves_no_process_behind_and_the_next_run_recovers(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter, tmp_path: Path
):
    refs = through(proxy, _fleet(registry, "fkill", 3)[1:], registry)
    proxy.add(Fault.delay(5, method="GET", path=r"/blobs/sha256:", times=None))  # scans in flight when it dies
    config = write(config_writer, proxy, refs)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "ph")}
    run = subprocess.Popen([sys.executable, "-m", "vulnattest", "run", "--config", str(config)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proxy.count("GET", r"/blobs/sha256:") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    tree = _process_tree(run.pid)
    assert len(tree) >= 3  # its Prefect server, its Trivy server, scans

    os.kill(run.pid, signal.SIGKILL)
    run.wait()

    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in tree if Path(f"/proc/{pid}").exists()]
    assert left == [], subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(map(str, left))], capture_output=True,
                                      text=True).stdout
    proxy.clear()
    state, outcomes = attest(config)
    assert state.is_completed() and all(o.ok for o in outcomes.values())
    assert [_vuln_layers(registry, ref.replace(proxy.host, registry.host)) for ref in refs] == [1, 1]


# -- alerts ------------------------------------------------------------------------------------------------------


def test_a_slow_or_down_webhook_gets_each_alert_under_one_idempotency_key_until_it_is_delivered(
    registry: LocalRegistry, keypair: tuple[Path, Path], tmp_path: Path
):
    from flows.check_freshness import check_freshness

    [ref] = _fleet(registry, "fhook", 2)[1:]  # never attested: missing
    with WebhookReceiver() as receiver:
        config = tmp_path / "fleet.yaml"
        config.write_text(yaml.safe_dump({
            "images": [ref], "registries": {registry.host: {"insecure": True}},
            "store": {"url": (tmp_path / "reports").as_uri()}, "signing": {"key": str(keypair[0])},
            "alerts": [{"webhook": receiver.url, "name": "oncall", "timeout": "1s"}],
        }))
        receiver.delay = 2.0  # it processes each alert, but answers after our timeout
        slow = check_freshness(config_path=str(config), return_state=True)
        assert slow.is_failed() and "not delivered" in (slow.message or "")
        copies = list(receiver.keys)
        assert len(copies) == 3 and len(set(copies)) == 1 and copies[0]  # one alert, tried three times
        receiver.delay = 0.0
        receiver.server.shutdown()
        receiver.server.server_close()  # down: connections refused
        down = check_freshness(config_path=str(config), return_state=True)
        assert down.is_failed()
    with WebhookReceiver() as back:  # another port: the config still names the old one
        config.write_text(config.read_text().replace(receiver.url, back.url))
        delivered = check_freshness(config_path=str(config), return_state=True)
        assert delivered.is_completed(), delivered.message
        assert back.keys == copies[:1]  # the same alert, under the same key: a receiver that kept it drops it
        assert [alert["kind"] for alert in back.take()] == ["alert"]


# -- the Prefect API -------------------------------------------------------------------------------------------


def test_losing_the_prefect_api_mid_run_costs_a_bounded_wait_and_says_what_was_attested(
    registry: LocalRegistry, proxy: FaultProxy, config_writer: ConfigWriter, tmp_path: Path
):
    from deployments.server import LocalPrefectServer

    refs = through(proxy, _fleet(registry, "flost", 9)[1:], registry)
    proxy.add(Fault.delay(1, method="GET", path=r"/blobs/sha256:", times=None))
    config = write(config_writer, proxy, refs, concurrency=2)
    with LocalPrefectServer() as server, TcpProxy(f"127.0.0.1:{server.port}") as api:
        run = subprocess.Popen([sys.executable, "-m", "vulnattest", "run", "--config", str(config)],
                               env={**os.environ, "PREFECT_API_URL": f"http://{api.host}/api"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while proxy.count("PUT", r"\.att$") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        api.cut()  # the first image is attested, the others are on their way
        cut = time.monotonic()
        output, _ = run.communicate(timeout=300)
    assert run.returncode == 1
    assert time.monotonic() - cut < 90
    assert "lost the Prefect API" in output and "Traceback" not in output
    assert "8 of 8 image(s) attested by this run" in output
    assert [_vuln_layers(registry, ref.replace(proxy.host, registry.host)) for ref in refs] == [1] * 8
