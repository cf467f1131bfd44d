"""What a scan-and-attest run did for each image, in a form the CLI, artifacts and benchmarks all read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vulnattest.changes import FindingsChange
from vulnattest.text import counts_by_initial, md_cell, short_digest

STAGES = ("scan", "hash", "store", "verify", "attest")
"""The task runs of one image, in order (scan resolves the tag first)."""


@dataclass(frozen=True)
class ImageOutcome:
    """One image's result: attested (with where everything went) or failed (at which stage, and why)."""

    image: str
    digest: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    report_uri: str | None = None
    report_sha256: str | None = None
    attestation_digest: str | None = None
    replaced: int = 0
    failed_stage: str | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    change: FindingsChange | None = None
    """What changed since the image's previous attested scan (None the first time, or when it failed)."""

    @property
    def ok(self) -> bool:
        """True when the image was attested."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (the shape `vulnattest run --json` prints, one per image)."""
        return {**asdict(self), "ok": self.ok}

    def findings_text(self) -> str:
        """Findings per severity, e.g. ``C1 H2 M0 L3 U0``."""
        return counts_by_initial(self.counts)


def summary_markdown(outcomes: list[ImageOutcome], title: str = "scan-and-attest") -> str:
    """A markdown summary: totals, then one row per image (failures first)."""
    failed = [o for o in outcomes if not o.ok]
    lines = [
        f"# {title}",
        "",
        f"**{len(outcomes) - len(failed)} of {len(outcomes)} images attested**"
        + (f", {len(failed)} failed" if failed else ""),
        "",
        "| image | digest | findings (C H M L U) | report | sha256 | attestation | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (o.ok, o.image)):
        result = "attested" if o.ok else f"**failed at {o.failed_stage}**: {md_cell(o.error or '')}"
        lines.append(
            f"| `{o.image}` | `{short_digest(o.digest)}` | {o.findings_text()} | {md_cell(o.report_uri or '-')} | "
            f"`{short_digest(o.report_sha256)}` | `{short_digest(o.attestation_digest)}` | {result} |"
        )
    return "\n".join(lines) + "\n"

