"""`vulnattest demo` end to end, as a newcomer runs it: a fresh process, no configuration, no services."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import missing
from vulnattest.demo.registry import INSTALL_HINT


def test_demo_walks_through_scan_attest_check_and_a_stale_alert(tmp_path: Path):
    if shutil.which("docker-registry") is None:
        missing(INSTALL_HINT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["COLUMNS"] = "200"
    done = subprocess.run([sys.executable, "-m", "vulnattest", "demo", "--workdir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout
    assert done.returncode == 0, output[-4000:] + done.stderr[-4000:]
    assert "DEMO ADVISORY DB" in output
    assert re.search(r"demo/legacy-batch:2\.3: stale\s+scanned 192h0m\d+s ago", output)
    assert "alert received by on-call" in output
    assert "STALE " in output
    assert "vulnattest run --config" in output  # the alert says what to run
    assert "vulnattest policy kyverno" in output  # and the demo ends with what to try next
    # it left nothing running: the registry it served from is gone
    host = re.search(r"local registry at (127\.0\.0\.1:\d+)", output)
    assert host is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{host.group(1)}/v2/", timeout=2)
    assert (tmp_path / "fleet.yaml").exists()


def test_demo_with_admission_ends_as_the_job_does_in_a_cluster(tmp_path: Path):
    """`demo --admission`: the Pod is created while its scan is fresh and denied by Kyverno's webhook once aged."""
    from tests.conftest import oracle

    if shutil.which("docker-registry") is None:
        missing(INSTALL_HINT)
    for tool in ("etcd", "kubernetes", "kyverno-controller"):
        oracle(tool)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["COLUMNS"] = "200"
    done = subprocess.run([sys.executable, "-m", "vulnattest", "demo", "--admission", "--workdir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout
    assert done.returncode == 0, output[-4000:] + done.stderr[-4000:]
    created, denied = output.index("pod/legacy-batch created"), output.index("denied the request")
    assert created < output.index("alert received by on-call") < denied
    assert "the vulnerability scan is older than 168h0m0s" in output[denied:]
    # it left nothing running: the API server is gone
    server = re.search(r"API server at https://127\.0\.0\.1:(\d+)", output)
    assert server is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(server.group(1)))) != 0
