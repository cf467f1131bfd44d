"""What a channel is owed of the change news: kept in the store, added to and taken from by each run, so two runs
that note news at once keep each other's."""

from __future__ import annotations

from pathlib import Path

from vulnattest.changes import FindingsChange, merged, owe, undelivered
from vulnattest.scanners.interface import Finding
from vulnattest.storage.local import LocalReportStore


def change(image: str) -> FindingsChange:
    return FindingsChange(image, "sha256:2", "sha256:1", "2030-01-01T00:00:00Z",
                          new=(Finding("CVE-2099-9001", "CRITICAL", "musl", "1.2.4-r2"),))


def test_each_run_adds_what_it_could_not_deliver_and_drops_what_it_did(tmp_path: Path):
    store = LocalReportStore(tmp_path)
    web, api = change("reg.example/web:1"), change("reg.example/api:1")
    assert undelivered(store, "on-call") == ()

    owe(store, "on-call", add=[web])  # one run's delivery failed
    owe(store, "on-call", add=[api, web])  # another's, at the same time: neither loses the other's news
    assert undelivered(store, "on-call") == (web, api)
    assert undelivered(store, "other-channel") == ()

    owe(store, "on-call", drop=[web])  # the next run delivered what it read
    assert undelivered(store, "on-call") == (api,)
    assert merged([web], [api, web]) == (web, api)
