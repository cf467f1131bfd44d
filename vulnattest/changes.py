"""What changed since an image's last scan: vulnerabilities newly found (at or above a severity), newly fixable,
and gone. Each attested scan's findings are kept in the report store as the image's baseline (``state/findings/``,
by the image as the fleet names it, so a rebuild under the same tag compares with the previous digest's scan), and
the next scan is compared with it: a change is news once, since the scan after compares with this one."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from vulnattest import __version__
from vulnattest.config import ChangeSettings
from vulnattest.images import ImageRef
from vulnattest.scanners.interface import SEVERITIES, Finding, ScanReport
from vulnattest.storage.interface import ObjectKey, ReportStore
from vulnattest.text import md_cell, rfc3339, short_digest

__all__ = ["ChangesNotice", "FindingsChange", "baseline_key", "changes_markdown", "merged", "owe", "record_changes",
           "undelivered"]

log = logging.getLogger(__name__)

_Key = tuple[str, str, str]  # vulnerability, package, installed version


@dataclass(frozen=True)
class FindingsChange:
    """One image's change since its previous attested scan (`previous_digest` differs when it was rebuilt)."""

    image: str
    digest: str
    previous_digest: str
    previous_finished: str
    new: tuple[Finding, ...] = ()
    fixable: tuple[Finding, ...] = ()
    gone: tuple[Finding, ...] = ()

    @property
    def news(self) -> bool:
        """Whether on-call hears of it: something new or newly fixable (gone alone is reported, not alerted)."""
        return bool(self.new or self.fixable)

    @property
    def rebuilt(self) -> bool:
        """The tag names another digest than at the previous scan."""
        return self.previous_digest != self.digest

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (one image of a `ChangesNotice`, and the payload of its Prefect event)."""
        return {"image": self.image, "digest": self.digest, "previous_digest": self.previous_digest,
                "rebuilt": self.rebuilt, "new": [_finding_json(f) for f in self.new],
                "fixable": [_finding_json(f) for f in self.fixable], "gone": [_finding_json(f) for f in self.gone]}

    def lines(self) -> list[str]:
        """What changed, one line each, for people."""
        since = f"since the scan of {short_digest(self.previous_digest)} (rebuilt)" if self.rebuilt else (
            f"since its scan of {self.previous_finished}")
        out = [f"{self.image} ({short_digest(self.digest)}) {since}:"]
        out += [f"  NEW {_describe(f)}" for f in self.new]
        out += [f"  NOW FIXABLE {_describe(f)}" for f in self.fixable]
        if self.gone:
            out.append(f"  gone: {', '.join(sorted({f.vulnerability_id for f in self.gone}))}")
        return out


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"id": f.vulnerability_id, "severity": f.severity, "package": f.package, "installed": f.installed_version,
            "fixed": f.fixed_version}


def _describe(f: Finding) -> str:
    fix = f", fixed in {f.fixed_version}" if f.fixed_version else ""
    return f"{f.severity} {f.vulnerability_id} in {f.package} {f.installed_version}{fix}"


class _Baseline(BaseModel):
    version: int
    image: str
    digest: str
    finished: str
    findings: list[tuple[str, str, str, str, str | None]]


def baseline_key(image: ImageRef) -> ObjectKey:
    """Where the baseline of `image` (as the fleet names it: by tag, or by digest) is kept."""
    return ObjectKey.join("state", "findings", image.registry, image.repository,
                          (image.tag or image.digest or "latest").replace(":", "-") + ".json")


def record_changes(store: ReportStore, image: ImageRef, report: ScanReport,
                   settings: ChangeSettings) -> FindingsChange | None:
    """Compare `report` with `image`'s baseline and make it the new baseline; None the first time (nothing to
    compare with). Raises StoreError when the store cannot be read or written."""
    key = baseline_key(image)
    data = store.get(key)
    previous: _Baseline | None = None
    if data is not None:
        try:
            previous = _Baseline.model_validate_json(data)
        except ValidationError:
            previous = None  # unreadable: start again from this scan
    digest = report.image.digest
    current = {_key(f): f for f in report.findings}
    body = _Baseline(version=1, image=str(image), digest=digest, finished=rfc3339(report.finished),
                     findings=[(*k, f.severity, f.fixed_version) for k, f in sorted(current.items())])
    payload = body.model_dump_json().encode()
    store.put(key, payload, hashlib.sha256(payload).hexdigest())
    if previous is None:
        return None
    before = {(i, p, v): Finding(i, s, p, v, fixed) for i, p, v, s, fixed in previous.findings}
    at_least = SEVERITIES[: SEVERITIES.index(settings.severity) + 1]
    return FindingsChange(
        image=str(image), digest=digest, previous_digest=previous.digest, previous_finished=previous.finished,
        new=tuple(f for k, f in sorted(current.items()) if k not in before and f.severity in at_least),
        fixable=tuple(f for k, f in sorted(current.items()) if settings.fixable and k in before and f.fixed
                      and not before[k].fixed and f.severity in at_least),
        gone=tuple(f for k, f in sorted(before.items()) if k not in current),
    )


MAX_OWED = 1000
"""The most changes a channel's undelivered news keeps (the newest): a receiver down for weeks gets a digest."""


def _owed_key(channel: str) -> ObjectKey:
    return ObjectKey.join("state", "changes", "undelivered",
                          hashlib.sha256(channel.encode()).hexdigest()[:32] + ".json")


def undelivered(store: ReportStore, channel: str) -> tuple[FindingsChange, ...]:
    """The news `channel` has not received yet (a delivery failed), to be sent with the next run's; raises
    StoreError when the store cannot be read."""
    data = store.get(_owed_key(channel))
    if not data:
        return ()
    try:
        return tuple(_OWED.validate_json(data))
    except ValidationError:
        log.warning("%s: unreadable undelivered news for %s, dropped", _owed_key(channel), channel)
        return ()


def owe(store: ReportStore, channel: str, *, add: Sequence[FindingsChange] = (),
        drop: Sequence[FindingsChange] = ()) -> None:
    """Note that `channel` did not receive `add` and did receive `drop`, on top of what the store holds now (another
    run may have noted news of its own since this one read it); raises StoreError."""
    delivered = {_change_key(c) for c in drop}
    kept = {_change_key(c): c for c in (*undelivered(store, channel), *add) if _change_key(c) not in delivered}
    payload = _OWED.dump_json(list(kept.values())[-MAX_OWED:])
    store.put(_owed_key(channel), payload, hashlib.sha256(payload).hexdigest())


def merged(*changes: Iterable[FindingsChange]) -> tuple[FindingsChange, ...]:
    """`changes` once each (the same image, digest and baseline), in order."""
    return tuple({_change_key(c): c for group in changes for c in group}.values())


def _change_key(c: FindingsChange) -> tuple[str, str, str, str]:
    return c.image, c.digest, c.previous_digest, c.previous_finished


def _key(f: Finding) -> _Key:
    return f.vulnerability_id, f.package, f.installed_version


def changes_markdown(changes: list[FindingsChange]) -> str:
    """The run artifact's section on what changed since the last scans."""
    news = [c for c in changes if c.news or c.gone]
    if not news:
        return ""
    lines = ["", "## Changed since the last scan", "",
             "| image | new | newly fixable | gone |", "|---|---|---|---|"]
    lines += [f"| `{c.image}`{' (rebuilt)' if c.rebuilt else ''} | "
              f"{md_cell(', '.join(f'{f.severity} {f.vulnerability_id}' for f in c.new)) or '-'} | "
              f"{md_cell(', '.join(f.vulnerability_id for f in c.fixable)) or '-'} | "
              f"{md_cell(', '.join(sorted({f.vulnerability_id for f in c.gone}))) or '-'} |" for c in news]
    return "\n".join(lines) + "\n"


_OWED = TypeAdapter(list[FindingsChange])


@dataclass(frozen=True)
class ChangesNotice:
    """One run's news for a channel: the images with vulnerabilities new or newly fixable since their last scan.
    It has what a webhook or Prefect block channel sends (subject, text, JSON, an idempotency key)."""

    channel: str
    changes: tuple[FindingsChange, ...]

    def subject(self) -> str:
        """A short subject line."""
        found = sum(len(c.new) for c in self.changes)
        fixable = sum(len(c.fixable) for c in self.changes)
        return (f"[vulnattest] {len(self.changes)} image(s) changed since their last scan: {found} new "
                f"vulnerabilit{'y' if found == 1 else 'ies'}, {fixable} newly fixable")

    def text(self) -> str:
        """The body: every image, what is new and what to do."""
        lines = [self.subject().removeprefix("[vulnattest] ")]
        for change in self.changes:
            lines += change.lines()
        lines.append("Fixable ones: rebuild the image with the fixed packages; `vulnattest status` shows the fleet.")
        return "\n".join(lines)

    @property
    def idempotency_key(self) -> str:
        """The same for the same news (a retried delivery), different for the next."""
        identity = "\n".join(sorted(f"{c.image}|{c.digest}|{c.previous_digest}|{c.previous_finished}"
                                    for c in self.changes))
        return hashlib.sha256(f"{self.channel}\n{identity}".encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        """The JSON a webhook receives (``kind: changes``)."""
        return {"source": "vulnattest", "version": __version__, "idempotency_key": self.idempotency_key,
                "kind": "changes", "subject": self.subject(), "text": self.text(), "count": len(self.changes),
                "images": [c.to_json() for c in self.changes]}
