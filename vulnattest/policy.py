"""The vulnerability policy on an attested scan report: a severity threshold, an allow list that expires, a deny list.

The fleet's policy comes from the config; overrides whose patterns match an image replace its threshold and extend
its lists. A denied vulnerability fails whatever the allow list says: the deny list is the explicit, stronger
statement. An allow entry stops applying at its expiry, and images that rely on one are flagged ahead of time.
A VEX statement that applies to the image (see vulnattest.vex) suppresses a finding as an allow entry does, with no
expiry; the deny list beats it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from vulnattest.config import AllowEntry, PolicyOverride, PolicySettings
from vulnattest.errors import ImageRefError
from vulnattest.images import ImageRef
from vulnattest.scanners.interface import SEVERITIES, Finding
from vulnattest.scanners.trivy_report import parse_findings
from vulnattest.vex import Suppression, VexDocument, suppressions_for


def severity_rank(severity: str) -> int:
    """0 for CRITICAL up to 4 for UNKNOWN: lower is worse; an unrecognised severity ranks as UNKNOWN."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES) - 1


@dataclass(frozen=True)
class ImagePolicy:
    """The policy for one image, after the overrides that match it were applied."""

    severity: str | None = None
    fixed_only: bool = False
    allow: tuple[AllowEntry, ...] = ()
    deny: frozenset[str] = frozenset()
    allow_warning: timedelta = timedelta(days=7)
    vex: tuple[Suppression, ...] = ()

    @property
    def active(self) -> bool:
        """True when the policy can fail an image at all (a threshold or a deny list)."""
        return self.severity is not None or bool(self.deny)

    def describe(self) -> str:
        """One line for reports, e.g. ``HIGH and above, fixed only; 2 allowed; 1 denied``."""
        parts = [f"{self.severity} and above{', fixed only' if self.fixed_only else ''}" if self.severity
                 else "no severity threshold"]
        if self.allow:
            parts.append(f"{len(self.allow)} allowed")
        if self.deny:
            parts.append(f"{len(self.deny)} denied")
        if self.vex:
            parts.append(f"{len(self.vex)} suppressed by VEX")
        return "; ".join(parts)

    def suppression(self, finding: Finding) -> Suppression | None:
        """The VEX statement that suppresses `finding` in this image, if one does."""
        return next((s for s in self.vex if s.covers(finding)), None)


def policy_for(settings: PolicySettings, image: ImageRef | str,
               vex: Mapping[str, VexDocument] | None = None) -> ImagePolicy:
    """The fleet policy with every override whose patterns match `image` applied, in file order; `vex` holds the
    VEX documents the settings name, by location (`vulnattest.vex.load_vex_documents`)."""
    severity, fixed_only = settings.severity, settings.fixed_only
    allow, deny = list(settings.allow), set(settings.deny)
    for override in _overrides_for(settings, image):
        severity = override.severity if override.severity is not None else severity
        fixed_only = override.fixed_only if override.fixed_only is not None else fixed_only
        allow.extend(override.allow)
        deny.update(override.deny)
    documents = [vex[location] for location in vex_locations_for(settings, image) if vex and location in vex]
    # admission holds a repository to one policy and sees ids only: a statement counts here when it covers every
    # image of the repository, in every package; one pinned to a tag or digest, or narrowed to some packages, is
    # Trivy's to apply at the scan of the images it names
    repository = _repository(image)
    whole_image = tuple(s for s in suppressions_for(documents, repository) if not s.packages) if repository else ()
    return ImagePolicy(severity, fixed_only, tuple(allow), frozenset(deny), settings.allow_warning, whole_image)


def _repository(image: ImageRef | str) -> ImageRef | None:
    """`image` without its tag and digest; None for a pattern (a source's ``team/*``)."""
    try:
        ref = image if isinstance(image, ImageRef) else ImageRef.parse(image)
    except ImageRefError:
        return None
    return ImageRef(ref.registry, ref.repository)


def vex_locations_for(settings: PolicySettings, image: ImageRef | str) -> tuple[str, ...]:
    """The VEX documents that hold for `image`: the fleet's, then those of the overrides that match it."""
    overrides = _overrides_for(settings, image)
    return tuple(dict.fromkeys([*settings.vex, *(location for o in overrides for location in o.vex)]))


def _overrides_for(settings: PolicySettings, image: ImageRef | str) -> list[PolicyOverride]:
    """The overrides whose patterns match `image`, in file order."""
    names = _match_names(image)
    return [o for o in settings.overrides if any(fnmatchcase(name, pattern) for pattern in o.images for name in names)]


def scan_vex(settings: PolicySettings, image: ImageRef | str, vex: Mapping[str, VexDocument],
             attached: Iterable[VexDocument] = ()) -> tuple[VexDocument, ...]:
    """The VEX documents a scan of `image` applies: those that hold for it and those it carries (`attached`), less
    the statements on vulnerabilities its deny list names (the deny list beats VEX, and a finding Trivy drops could
    not fail admission)."""
    denied = policy_for(settings, image).deny
    documents = []
    held = [vex[location] for location in vex_locations_for(settings, image) if location in vex]  # read this run
    for document in [*held, *attached]:
        kept = tuple(s for s in document.statements
                     if not {s.vulnerability.name.upper(), *(a.upper() for a in s.vulnerability.aliases)} & denied)
        if kept:
            documents.append(document if kept == document.statements else
                             document.model_copy(update={"statements": kept}))
    return tuple(documents)


def _match_names(image: ImageRef | str) -> tuple[str, ...]:
    """What an override pattern may match: the reference as written, and registry/repository[:tag] normalised."""
    text = str(image)
    try:
        ref = image if isinstance(image, ImageRef) else ImageRef.parse(text)
    except ImageRefError:
        return (text,)
    tagged = f"{ref.name}:{ref.tag}" if ref.tag else ref.name
    return tuple(dict.fromkeys((text, str(ref), tagged, ref.name)))


@dataclass(frozen=True)
class Violation:
    """A finding the policy does not accept, and why."""

    finding: Finding
    why: str

    def describe(self) -> str:
        """E.g. ``CVE-2099-0001 (CRITICAL) in busybox 1.36.1-r15, fixed in 1.36.1-r16: at or above HIGH``."""
        f = self.finding
        fix = f", fixed in {f.fixed_version}" if f.fixed_version else ", no fix yet"
        return f"{f.vulnerability_id} ({f.severity}) in {f.package} {f.installed_version}{fix}: {self.why}"


@dataclass(frozen=True)
class ExpiringAllowance:
    """An allow entry that keeps an image passing today and stops applying soon."""

    entry: AllowEntry
    findings: tuple[Finding, ...]

    def describe(self) -> str:
        """E.g. ``allow entry CVE-… ("reason") expires 2030-01-01T00:00:00Z; 1 finding(s) then fail``."""
        return (f"allow entry {self.entry.id} ({self.entry.reason!r}) expires {_utc(self.entry.expires)}; "
                f"{len(self.findings)} finding(s) then fail the policy")


@dataclass(frozen=True)
class Suppressed:
    """A finding over the threshold that a VEX statement suppresses."""

    finding: Finding
    suppression: Suppression

    def describe(self) -> str:
        """E.g. ``CVE-2099-0001 in busybox: not_affected: vulnerable_code_not_present (VEX vex.json)``."""
        s = self.suppression
        return f"{self.finding.vulnerability_id} in {self.finding.package}: {s.reason} (VEX {s.source})"


@dataclass(frozen=True)
class PolicyResult:
    """What the policy made of one report."""

    violations: tuple[Violation, ...] = ()
    allowed: tuple[Finding, ...] = ()
    expiring: tuple[ExpiringAllowance, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no finding violates the policy."""
        return not self.violations

    @property
    def next_expiry(self) -> datetime | None:
        """When the first relied-on allow entry expires, if one expires within the warning window."""
        return min((e.entry.expires for e in self.expiring), default=None)

    def merged(self, other: PolicyResult) -> PolicyResult:
        """Both results together, without repeating a finding (for several attestations of one image)."""
        return PolicyResult(
            violations=tuple({(v.finding, v.why): v for v in (*self.violations, *other.violations)}.values()),
            allowed=tuple(dict.fromkeys((*self.allowed, *other.allowed))),
            expiring=_merge_expiring((*self.expiring, *other.expiring)),
            suppressed=tuple(dict.fromkeys((*self.suppressed, *other.suppressed))),
        )


def evaluate(policy: ImagePolicy, findings: Iterable[Finding], now: datetime) -> PolicyResult:
    """Apply `policy` to `findings` as of `now`."""
    violations: list[Violation] = []
    allowed: list[Finding] = []
    suppressed: list[Suppressed] = []
    relied_on: dict[str, list[Finding]] = {}
    entries = {entry.id: entry for entry in sorted(policy.allow, key=lambda e: e.expires)}  # latest expiry wins
    for finding in dict.fromkeys(findings):
        vuln_id = finding.vulnerability_id.upper()
        if vuln_id in policy.deny:
            why = "on the deny list" + (" (the deny list beats the allow list)" if vuln_id in entries else "")
            violations.append(Violation(finding, why))
            continue
        if not _over_threshold(policy, finding):
            continue
        suppression = policy.suppression(finding)
        if suppression is not None:
            suppressed.append(Suppressed(finding, suppression))
            continue
        entry = entries.get(vuln_id)
        if entry is None:
            violations.append(Violation(finding, _threshold_text(policy)))
        elif entry.expires <= now:
            violations.append(Violation(finding, f"{_threshold_text(policy)}; its allow entry expired "
                                                  f"{_utc(entry.expires)} ({entry.reason!r})"))
        else:
            allowed.append(finding)
            if entry.expires - now <= policy.allow_warning:
                relied_on.setdefault(entry.id, []).append(finding)
    expiring = tuple(ExpiringAllowance(entries[vid], tuple(found)) for vid, found in relied_on.items())
    return PolicyResult(tuple(violations), tuple(allowed), tuple(sorted(expiring, key=lambda e: e.entry.expires)),
                        tuple(suppressed))


def evaluate_report(policy: ImagePolicy, report: Any, now: datetime) -> PolicyResult:
    """Apply `policy` to a Trivy JSON report (``scanner.result`` of the vuln predicate, already decoded).

    Raises ScanError when the report is not a Trivy report and the policy has something to check.
    """
    if not policy.active:
        return PolicyResult()
    return evaluate(policy, parse_findings(report), now)


def _over_threshold(policy: ImagePolicy, finding: Finding) -> bool:
    if policy.severity is None:
        return False
    if policy.fixed_only and not finding.fixed:
        return False
    return severity_rank(finding.severity) <= severity_rank(policy.severity)


def _threshold_text(policy: ImagePolicy) -> str:
    return f"at or above {policy.severity}" + (" with a fix available" if policy.fixed_only else "")


def _merge_expiring(items: Iterable[ExpiringAllowance]) -> tuple[ExpiringAllowance, ...]:
    merged: dict[str, ExpiringAllowance] = {}
    for item in items:
        seen = merged.get(item.entry.id)
        findings = (*seen.findings, *item.findings) if seen else item.findings
        merged[item.entry.id] = ExpiringAllowance(item.entry, tuple(dict.fromkeys(findings)))
    return tuple(sorted(merged.values(), key=lambda e: e.entry.expires))


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

