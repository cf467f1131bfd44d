"""Registry credentials come from the docker config (the docker package reads it), never from the fleet config."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from vulnattest.registry import docker_credentials


def test_credentials_are_read_from_the_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    auth = base64.b64encode(b"robot:s3cret").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"registry.example.com": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    found = docker_credentials("registry.example.com")
    assert found is not None
    assert (found.username, found.password) == ("robot", "s3cret")
    assert "s3cret" not in repr(found)
    assert docker_credentials("other.example.com") is None


def test_a_missing_docker_config_means_anonymous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert docker_credentials("registry.example.com") is None
