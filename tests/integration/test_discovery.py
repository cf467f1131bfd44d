"""Fleets found in a registry rather than listed: the catalog and tags APIs of the real registry (page by page),
tag patterns, version ranges, the newest N, one image per digest; the generated policy covers what sources find; a
newly pushed tag joins the next run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import ConfigWriter
from vulnattest.cli import app
from vulnattest.config import FleetConfig, RegistrySource
from vulnattest.demo.images import DEMO_ALPINE_PACKAGES, alpine_image
from vulnattest.demo.registry import LocalRegistry, push_image
from vulnattest.discovery import Discovered, discover, discovered_fleet, with_discovered
from vulnattest.kyverno import cluster_policy


@pytest.fixture(scope="module")
def catalog(registry: LocalRegistry) -> str:
    """team-a/api and team-a/web with versioned tags (latest naming 2.0.0's digest), and other/tool:1."""
    client = registry.client()
    for repository, tags in {"disc/team-a/api": ["1.0.0", "1.1.0", "v1.2.0", "2.0.0", "2.1.0-rc1"],
                             "disc/team-a/web": ["3.0.0", "nightly"], "disc/other/tool": ["1"]}.items():
        for tag in tags:
            push_image(client, repository, tag, alpine_image(DEMO_ALPINE_PACKAGES, marker=f"{repository}:{tag}"))
    push_image(client, "disc/team-a/api", "latest",
               alpine_image(DEMO_ALPINE_PACKAGES, marker="disc/team-a/api:2.0.0"))
    return registry.host


def refs(found: Sequence[Discovered | str], host: str) -> list[str]:
    """The references, without the registry host."""
    return [(f.ref if isinstance(f, Discovered) else f).removeprefix(f"{host}/") for f in found]


def test_patterns_ranges_and_the_newest_n_over_pages_of_the_catalog_and_tags(catalog: str, registry: LocalRegistry):
    client = registry.client()
    team = RegistrySource(registry=catalog, repositories=("disc/team-a/*",), semver=">=1.1,<4", newest=2)

    # two names a page: every listing takes several pages, following the registry's Link headers
    found = discover(team, client, page_size=2)

    assert refs(found, catalog) == ["disc/team-a/api:2.1.0-rc1", "disc/team-a/api:2.0.0", "disc/team-a/web:3.0.0"]
    assert found[1].aliases == ()  # `latest` is no version: the range left it out
    every = discover(RegistrySource(registry=catalog, repositories=("disc/team-a/api",)), client, page_size=2)
    assert refs(every, catalog) == ["disc/team-a/api:2.1.0-rc1", "disc/team-a/api:2.0.0", "disc/team-a/api:v1.2.0",
                                    "disc/team-a/api:1.1.0", "disc/team-a/api:1.0.0"]
    assert every[1].aliases == ("latest",)  # one image per digest, named by its highest version
    nightly = discover(RegistrySource(registry=catalog, repositories=("disc/*/web",), tags="night*"), client)
    assert refs(nightly, catalog) == ["disc/team-a/web:nightly"]


def test_a_failing_source_is_named_and_the_listed_images_go_on(catalog: str, caplog: pytest.LogCaptureFixture):
    config = FleetConfig.model_validate({
        "images": [f"{catalog}/disc/other/tool:1"],
        "registries": {catalog: {"insecure": True}},
        "sources": [{"registry": "127.0.0.1:9", "repositories": ["team/*"]},
                    {"registry": catalog, "repositories": ["disc/team-a/web"], "tags": "3.*"}],
    })

    fleet, origins = discovered_fleet(config)

    assert refs(list(fleet.images), catalog) == ["disc/other/tool:1", "disc/team-a/web:3.0.0"]
    assert with_discovered(config).images == fleet.images
    assert "sources[0] (127.0.0.1:9/team/*) found no images this run" in caplog.text
    assert origins == {f"{catalog}/disc/other/tool:1": "images",
                       f"{catalog}/disc/team-a/web:3.0.0": f"sources[1]: {catalog}/disc/team-a/web"}


def test_the_policy_covers_every_tag_of_a_sources_repositories(catalog: str, keypair: tuple[Path, Path]):
    config = FleetConfig.model_validate({"sources": [{"registry": catalog, "repositories": ["disc/team-a/*"]}],
                                         "signing": {"key": str(keypair[0])}})
    [verify] = cluster_policy(config, datetime.now(UTC))["spec"]["rules"][0]["verifyImages"]

    assert verify["imageReferences"] == [f"{catalog}/disc/team-a/*:*", f"{catalog}/disc/team-a/*@*"]


@pytest.mark.usefixtures("prefect_server")
def test_a_newly_pushed_tag_is_scanned_and_attested_on_the_next_run(
    config_writer: ConfigWriter, registry: LocalRegistry
):
    client = registry.client()
    push_image(client, "disc/grow/app", "1.0.0", alpine_image(DEMO_ALPINE_PACKAGES, marker="grow-1"))
    config = config_writer.write([], sources=[{"registry": registry.host, "repositories": ["disc/grow/*"]}])
    runner = CliRunner()

    first = runner.invoke(app, ["run", "--config", str(config)])
    push_image(client, "disc/grow/app", "1.1.0", alpine_image(DEMO_ALPINE_PACKAGES, marker="grow-2"))
    second = runner.invoke(app, ["run", "--config", str(config)])
    status = runner.invoke(app, ["status", "--config", str(config), "--json", "--all"])

    assert first.exit_code == 0 and "1 of 1 image(s) attested" in first.output, first.output
    assert second.exit_code == 0 and "2 of 2 image(s) attested" in second.output, second.output
    verdicts = {(v["image"].removeprefix(f"{registry.host}/"), v["verdict"], v["source"])
                for v in json.loads(status.stdout)}
    found_by = f"sources[0]: {registry.host}/disc/grow/*"
    assert verdicts == {("disc/grow/app:1.0.0", "fresh", found_by), ("disc/grow/app:1.1.0", "fresh", found_by)}
