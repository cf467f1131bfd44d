"""README.md stays true: its configuration reference is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from vulnattest.config_reference import BEGIN, END, markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_reference_matches_the_models():
    text = README.read_text()
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == markdown(), "run `python -m vulnattest.config_reference README.md`"


def test_every_documented_key_is_a_real_key():
    from vulnattest.config_reference import rows

    keys = {key for key, _, _ in rows()}
    assert {"images", "store.url", "signing.key", "freshness.max_age", "alerts[].webhook", "policy.allow[].expires",
            "registries.<host>.insecure", "scanner.trivy.ignore_unfixed", "concurrency"} <= keys
