"""`vulnattest demo` end to end, as a newcomer runs it: a fresh process, no configuration, no services."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from vulnattest.demo.registry import INSTALL_HINT


def test_demo_walks_through_scan_attest_check_and_a_stale_alert(tmp_path: Path):
    if shutil.which("docker-registry") is None:
        pytest.skip(INSTALL_HINT)
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
