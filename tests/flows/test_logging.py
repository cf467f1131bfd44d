"""What the Prefect UI shows of a run: its name, and vulnattest's own log lines. `vulnattest run` in a fresh
process, against the real Prefect server, with a docker login vulnattest cannot use (a warning of
`vulnattest.registry`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL

from tests.conftest import ConfigWriter, DemoImages


@pytest.mark.usefixtures("prefect_server")
def test_vulnattest_warnings_reach_the_flow_runs_logs(config_writer: ConfigWriter, demo_images: DemoImages,
                                                       tmp_path: Path):
    host = demo_images.alpine.split("/")[0]
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {host: {"identitytoken": "opaque"}}}))
    config = config_writer.write([demo_images.alpine])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), DOCKER_CONFIG=str(tmp_path / "docker"))

    done = subprocess.run([sys.executable, "-m", "vulnattest", "run", "--config", str(config), "--json"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [outcome] = json.loads(done.stdout)  # stdout holds the JSON alone: logs go to stderr
    assert (outcome["image"], outcome["ok"], outcome["failed_stage"]) == (demo_images.alpine, True, None)
    assert "OAuth identity token" in done.stderr  # on the console too
    deadline = time.monotonic() + 30
    while True:  # the run's logs reach the server in batches
        with get_client(sync_client=True) as client:
            [run] = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["scan-and-attest"])),
                                          sort=FlowRunSort.START_TIME_DESC, limit=1)
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        warned = [log for log in logs if log.name == "vulnattest.registry" and "OAuth identity token" in log.message]
        if warned or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert warned, [(log.name, log.message) for log in logs]
    assert warned[0].level == 30  # logging.WARNING
    assert re.fullmatch(r"scan-\d{8}-\d{6}", run.name), run.name  # named for what it is and when
