"""README.md stays true: its configuration reference is the one the code generates, its example config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from vulnattest.config import parse_config
from vulnattest.config_reference import BEGIN, END, markdown
from vulnattest.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_reference_matches_the_models():
    text = README.read_text()
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == markdown(), "run `python -m vulnattest.config_reference README.md`"


def _block(after: str, fence: str) -> str:
    """The fenced block that follows the sentence `after` in README.md."""
    text = README.read_text()
    start = text.index(fence, text.index(after)) + len(fence)
    return text[start: text.index("```", start)]


def test_the_example_config_parses_and_fails_as_shown():
    # its abbreviated digest written out, the example is a config that loads
    example = _block("An almost empty file works", "```yaml\n").replace("sha256:4f1c…", "sha256:" + "4f1c" * 16)
    config = parse_config(example, source="fleet.yaml", base=Path("/etc/vulnattest"))
    assert [str(r) for r in config.image_refs()] == [
        "registry.example.com/shop/frontend:1.4", "registry.example.com/shop/api@sha256:" + "4f1c" * 16]
    assert (config.store.region, config.policy.allow[0].id, len(config.alerts)) == ("eu-west-1", "CVE-2024-1234", 3)
    assert config.sources[0].newest == 3
    # and the error README shows is the one that example gives with a bad timeout
    with pytest.raises(ConfigError) as caught:
        parse_config(example.replace("timeout: 10m", "timeout: 10x"), source="fleet.yaml")
    assert str(caught.value) == _block("An invalid file fails before any work", "```\n").strip()
