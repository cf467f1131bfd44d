"""Scans that take seconds, many at once: they never fail each other (Trivy's layer cache is held by one server)."""

from __future__ import annotations

import pytest

from flows import results_of
from flows.scan_and_attest import scan_and_attest
from tests.conftest import ConfigWriter
from tests.faultproxy import Fault, FaultProxy
from tests.flows.test_scan_and_attest import _fleet, _vuln_layers
from vulnattest.demo.registry import LocalRegistry

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.parametrize("mode", ["local", "standalone"])
def test_six_slow_scans_four_at_once_are_all_attested(
    registry: LocalRegistry, config_writer: ConfigWriter, mode: str
):
    refs = _fleet(registry, f"slow-{mode}", 7)[1:]  # six single-platform images
    with FaultProxy(registry.host) as proxy:
        # every blob Trivy reads comes 8 s late, as from a slow registry or a big image: each scan takes over 8 s
        proxy.add(Fault.delay(8, method="GET", path=r"/blobs/sha256:", times=None))
        slow = [ref.replace(registry.host, proxy.host) for ref in refs]
        config = config_writer.write(slow, registries={proxy.host: {"insecure": True}}, concurrency=4,
                                     scanner={"trivy": {"cache_dir": str(config_writer.trivy_cache), "offline": True,
                                                        "server": mode}})
        state = scan_and_attest(config_path=str(config), return_state=True)
        outcomes = results_of(state)
        assert proxy.count("GET", r"/blobs/sha256:") >= 12  # config and layer of each image, each held 8 s

    assert state.is_completed(), state.message
    assert [o.ok for o in outcomes] == [True] * 6
    assert min(o.seconds["scan"] for o in outcomes) >= 8
    assert [_vuln_layers(registry, ref) for ref in refs] == [1] * 6
