"""Verdicts on each image's vuln attestations, judged the way Kyverno's ``verifyImages`` (``type: Cosign``) admits.

How admission sees an image: cosign verifies every attached attestation and silently drops those whose signature,
statement or subject digest fail, Kyverno keeps those whose predicate type equals the policy's type exactly, and
then *every* kept attestation must pass the conditions (``time_since(scanFinishedOn) <= max_age``). No attestation
left means the Pod is refused. So a stale attestation blocks a Pod even beside a fresh one, while one
signed by a key nobody trusts any more does not.
"""

from __future__ import annotations

import logging
import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx

from vulnattest.config import FleetConfig, FreshnessSettings, PolicySettings, format_duration
from vulnattest.errors import (
    NotFoundError,
    RegistryError,
    RegistryUnreachableError,
    ScanError,
    TransientError,
    TransientRegistryError,
    VerificationError,
    VulnattestError,
    is_transient_status,
)
from vulnattest.images import ImageRef
from vulnattest.policy import PolicyResult, evaluate_report, policy_for
from vulnattest.registry import Registries, RegistryClient, ResolvedImage
from vulnattest.registry_api import Registry
from vulnattest.scanners.interface import Finding, severity_counts
from vulnattest.scanners.trivy_report import parse_findings
from vulnattest.signing.interface import Verifier
from vulnattest.text import counts_by_initial, md_cell, rfc3339, short_digest
from vulnattest.verification import LAYOUTS, AttestationCheck, Check, check_attestations, vex_attestations
from vulnattest.vex import Suppression, VexDocument, readable_vex_documents, suppressions_for
from vulnattest.wire import PredicateScanner, VulnPredicate

log = logging.getLogger(__name__)

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""A scan time this far past the checker's clock is a clock difference, not a forged future time."""
_SHOWN = 3  # how many findings or failures a one-line reason names before "and N more"


class Verdict(StrEnum):
    """What admission does with an image now and soon."""

    FRESH = "fresh"
    EXPIRING = "expiring"
    STALE = "stale"
    MISSING = "missing"
    INVALID = "invalid"
    POLICY = "policy"
    UNREACHABLE = "unreachable"

    @property
    def rank(self) -> int:
        """0 for the worst verdict: stale, invalid and missing are refused now; fresh is last."""
        return _WORST_FIRST.index(self)

    @property
    def ok(self) -> bool:
        """True only for fresh."""
        return self is Verdict.FRESH

    @property
    def refused_now(self) -> bool:
        """True when admission refuses the image's Pods already, whatever its scan's deadline says."""
        return self in (Verdict.STALE, Verdict.INVALID, Verdict.MISSING, Verdict.POLICY)


_WORST_FIRST = (Verdict.STALE, Verdict.INVALID, Verdict.MISSING, Verdict.POLICY, Verdict.UNREACHABLE,
                Verdict.EXPIRING, Verdict.FRESH)


@dataclass(frozen=True)
class FreshnessRules:
    """The admission limit on a scan's age, and how long before it to warn."""

    max_age: timedelta = timedelta(hours=168)
    warn_before: timedelta = timedelta(hours=30)

    @classmethod
    def from_settings(cls, settings: FreshnessSettings) -> FreshnessRules:
        """The rules a config's ``freshness`` section sets."""
        return cls(settings.max_age, settings.effective_warn_before())


@dataclass(frozen=True)
class OnCallCommands:
    """The exact commands an alert tells on-call to run, naming the fleet's config file."""

    config: str = "fleet.yaml"

    def run(self, image: str) -> str:
        """Scan and re-attest one image (this replaces every vuln attestation it has)."""
        return f"vulnattest run --config {shlex.quote(self.config)} --image {shlex.quote(image)}"

    def status(self, image: str) -> str:
        """Check one image again."""
        return f"vulnattest status --config {shlex.quote(self.config)} --image {shlex.quote(image)}"

    def fleet_status(self) -> str:
        """Check every image."""
        return f"vulnattest status --config {shlex.quote(self.config)}"


@dataclass(frozen=True)
class LastScan:
    """What the newest accepted attestation says about the scan behind it."""

    finished: datetime
    scanner: str | None = None
    counts: dict[str, int] | None = None
    report_uri: str | None = None

    @classmethod
    def from_predicate(cls, predicate: dict[str, Any], finished: datetime) -> LastScan:
        """Read scanner, findings and stored report from a vuln predicate; a part that does not parse is left out."""
        read = VulnPredicate.read(predicate)
        scanner = read.scanner or PredicateScanner()
        name = scanner.uri.removeprefix("pkg:github/").split("@")[0].rpartition("/")[2]
        counts: dict[str, int] | None
        try:
            counts = severity_counts(parse_findings(scanner.result))
        except ScanError:
            counts = None
        return cls(
            finished=finished,
            scanner=" ".join(filter(None, (name, scanner.version))) or None,
            counts=counts,
            report_uri=read.report_uri or None,
        )

    def describe(self) -> str:
        """E.g. ``scan finished 2030-01-01T00:00:00Z by trivy 0.76.0: C1 H2 M0 L0 U1; report s3://…``."""
        text = f"scan finished {rfc3339(self.finished)}"
        if self.scanner:
            text += f" by {self.scanner}"
        if self.counts is not None:
            text += ": " + " ".join(f"{sev[0]}{n}" for sev, n in self.counts.items())
        if self.report_uri:
            text += f"; report {self.report_uri}"
        return text

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"finished": rfc3339(self.finished), "scanner": self.scanner, "counts": self.counts,
                "report_uri": self.report_uri}


@dataclass(frozen=True)
class ImageVerdict:
    """One image's verdict, with what on-call needs: why, by when, and the command to run."""

    image: str
    verdict: Verdict
    reason: str
    action: str
    checked_at: datetime
    digest: str | None = None
    scan_finished: datetime | None = None
    deadline: datetime | None = None
    last_scan: LastScan | None = None
    attestations: int = 0
    notes: tuple[str, ...] = ()

    @property
    def age(self) -> timedelta | None:
        """How old the scan that admission judges is (the oldest it keeps), when there is one."""
        # a scan a little ahead of this clock (within the tolerated skew) is zero seconds old, not negative
        return None if self.scan_finished is None else max(self.checked_at - self.scan_finished, timedelta(0))

    @property
    def ok(self) -> bool:
        """True when fresh."""
        return self.verdict.ok

    def sort_key(self) -> tuple[int, datetime, str]:
        """Worst verdict first, then the earliest deadline, then the image."""
        return (self.verdict.rank, self.deadline or datetime.min.replace(tzinfo=UTC), self.image)

    def deadline_text(self) -> str:
        """The deadline and how far off it is, e.g. ``2030-01-01T00:00:00Z (in 3h0m0s)``; ``-`` when none; ``now``
        for an image admission refuses already (a policy verdict's scan deadline may be days off)."""
        if self.verdict.refused_now and (self.deadline is None or self.deadline > self.checked_at):
            return "now"
        if self.deadline is None:
            return "-"
        left = self.deadline - self.checked_at
        relative = f"in {format_duration(left)}" if left >= timedelta(0) else f"{format_duration(-left)} ago"
        return f"{rfc3339(self.deadline)} ({relative})"

    def headline(self) -> str:
        """One line: verdict, image and reason."""
        return f"{self.verdict.value.upper()} {self.image}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (the shape `vulnattest status --json` prints, one per image)."""
        age = self.age
        return {
            "image": self.image,
            "digest": self.digest,
            "verdict": self.verdict.value,
            "age_seconds": None if age is None else int(age.total_seconds()),
            "deadline": rfc3339(self.deadline) if self.deadline else None,
            "reason": self.reason,
            "action": self.action,
            "scan_finished_on": rfc3339(self.scan_finished) if self.scan_finished else None,
            "checked_at": rfc3339(self.checked_at),
            "attestations": self.attestations,
            "last_scan": self.last_scan.to_json() if self.last_scan else None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class FreshnessChecker:
    """Judges images against the fleet's freshness rules and vulnerability policy."""

    rules: FreshnessRules
    verifier: Verifier
    policy: PolicySettings = field(default_factory=PolicySettings)
    commands: OnCallCommands = field(default_factory=OnCallCommands)
    clock_skew: timedelta = MAX_CLOCK_SKEW
    layouts: tuple[str, ...] = LAYOUTS["legacy"]
    """Where attestations are read: the layouts the config writes, which its generated policy has Kyverno read."""
    vex: tuple[tuple[str, VexDocument], ...] = ()
    """The VEX documents the policy names, by location."""
    vex_problems: tuple[str, ...] = ()
    """Why a VEX document the policy names is missing from `vex` (it could not be read)."""

    @classmethod
    def from_config(cls, config: FleetConfig, verifier: Verifier, config_path: str | None) -> FreshnessChecker:
        """A checker for `config`; `config_path` is named in the commands alerts tell on-call to run. A VEX document
        that cannot be read is left out, and named in `vex_problems`."""
        vex, problems = readable_vex_documents(config.policy.vex_locations())
        for problem in problems:
            log.error("%s", problem)
        return cls(
            rules=FreshnessRules.from_settings(config.freshness), verifier=verifier, policy=config.policy,
            commands=OnCallCommands(config_path or "fleet.yaml"), layouts=LAYOUTS[config.attach],
            vex=tuple(vex.items()), vex_problems=tuple(problems),
        )

    def with_max_age(self, max_age: timedelta) -> FreshnessChecker:
        """This checker judging against another age limit (warning no earlier than the limit itself)."""
        return replace(self, rules=FreshnessRules(max_age, min(self.rules.warn_before, max_age)))

    def check(self, client: Registry, image: ImageRef, now: datetime | None = None) -> ImageVerdict:
        """Resolve `image`, read and verify its vuln attestations, and judge them.

        Raises TransientError when the registry failed in a way worth retrying; any other registry failure is
        an `unreachable` verdict.
        """
        now = now or datetime.now(UTC)
        try:
            manifest = client.get_manifest(image.repository, image.reference)
        except TransientError:
            raise
        except NotFoundError as e:
            return self.unreachable(image, e, now, hint=f"check `{image}` in {self.commands.config} (is it pushed, "
                                                        "is the tag right?)")
        except RegistryError as e:
            return self.unreachable(image, e, now)
        resolved = ResolvedImage(image.with_digest(manifest.digest), manifest.digest, manifest.media_type,
                                 manifest.digest, size=len(manifest.body))
        attached: list[VexDocument] = []
        if self.policy.vex_attestations:
            try:
                attached = vex_attestations(client, resolved, self.verifier, self.layouts)
            except TransientError:
                raise
            except RegistryError as e:
                return self.unreachable(image, e, now, digest=manifest.digest)
        verdicts = []
        for layout in self.layouts:  # a policy reads each layout with its own verifyImages entry: each must pass
            try:
                checks = check_attestations(client, resolved, self.verifier, now, clock_skew=self.clock_skew,
                                            layouts=(layout,))
            except TransientError:
                raise
            except RegistryError as e:
                return self.unreachable(image, e, now, digest=manifest.digest)
            except VerificationError as e:  # what Kyverno refuses outright (too many referrers, a bundle too big)
                checks = [AttestationCheck("-", ok=False, reason=str(e), failed=Check.ENVELOPE)]
            verdict = self.judge(str(image), manifest.digest, checks, now, attached)
            if len(self.layouts) > 1:
                verdict = replace(verdict, reason=f"{_LAYOUT_NAMES[layout]}: {verdict.reason}")
            verdicts.append(verdict)
        return worst_first(verdicts)[0]

    def judge(self, image: str, digest: str, checks: Sequence[AttestationCheck], now: datetime,
              attached: Sequence[VexDocument] = ()) -> ImageVerdict:
        """The verdict for `image` at `digest` given the checks of its vuln attestations, as of `now`; `attached`
        are the verified VEX documents the image carries (admission reads them only as the scan applied them)."""
        run = self.commands.run(image)

        def verdict(kind: Verdict, reason: str, action: str = run, **extra: Any) -> ImageVerdict:
            return ImageVerdict(image=image, verdict=kind, reason=reason, action=action, checked_at=now,
                                digest=digest, attestations=len(checks), **extra)

        if not checks:
            return verdict(Verdict.MISSING, f"no vuln attestation is attached to {short_digest(digest)}; admission "
                                            "refuses it")
        selected = [c for c in checks if c.reaches_conditions]
        notes = tuple(f"admission ignores attestation {short_digest(c.layer_digest)}: {c.reason}"
                      for c in checks if not c.reaches_conditions)
        if not selected:
            return verdict(Verdict.INVALID, "no vuln attestation admission accepts: " + _failures(checks)
                           + _signature_hint(checks), notes=notes)
        broken = [c for c in selected if not c.ok]
        if broken:
            return verdict(Verdict.INVALID, f"{len(broken)} vuln attestation(s) admission selects fail its "
                                            f"conditions, which every one must pass: {_failures(broken)}",
                           notes=notes)
        finished = sorted(c.scan_finished for c in selected if c.scan_finished is not None)
        oldest, newest = finished[0], finished[-1]
        deadline = oldest + self.rules.max_age
        newest_check = max(selected, key=lambda c: c.scan_finished or oldest)
        timing: dict[str, Any] = {
            "scan_finished": oldest, "deadline": deadline, "notes": notes,
            "last_scan": LastScan.from_predicate(newest_check.predicate or {}, newest),
        }
        age = max(now - oldest, timedelta(0))
        if now > deadline:
            stale = sum(1 for t in finished if t + self.rules.max_age < now)
            if newest + self.rules.max_age >= now:
                reason = (f"{stale} stale vuln attestation(s) (oldest scanned {format_duration(age)} ago) sit beside "
                          f"a fresh one (scanned {format_duration(now - newest)} ago); Kyverno makes every one pass, "
                          "so admission refuses it; re-attesting replaces them all")
            else:
                reason = (f"scanned {format_duration(age)} ago, over max_age {format_duration(self.rules.max_age)}; "
                          f"admission refuses it since {rfc3339(deadline)}")
            return verdict(Verdict.STALE, reason, **timing)
        result = self._policy(image, selected, now)
        if isinstance(result, str):
            return verdict(Verdict.POLICY, result, action=self._policy_action(image), **timing)
        if not result.ok:
            shown = _first_few([v.describe() for v in result.violations])
            reason = f"{len(result.violations)} finding(s) violate the policy: {shown}{_suppressed_text(result)}"
            covered = self._pending_vex(image, digest, result, attached)
            if covered and len(covered) == len({v.finding for v in result.violations}):
                return verdict(Verdict.POLICY, reason + "; the image's VEX attestations suppress every one: "
                               + "; ".join(f"{f.vulnerability_id} ({s.reason}, {s.source})" for f, s in covered.items())
                               + "; admission sees that once the image is scanned again (the scan applies them)",
                               action=run, **timing)
            return verdict(Verdict.POLICY, reason, action=self._policy_action(image), **timing)
        warn_at = deadline - self.rules.warn_before
        if now >= warn_at:
            return verdict(Verdict.EXPIRING, f"scanned {format_duration(age)} ago; admission refuses it from "
                                             f"{rfc3339(deadline)}, in {format_duration(deadline - now)}"
                                             f"{_suppressed_text(result)}", **timing)
        if result.expiring:
            allowance = result.expiring[0]
            return verdict(
                Verdict.EXPIRING, "; ".join(e.describe() for e in result.expiring) + _suppressed_text(result),
                action=f"renew or drop the allow entry {allowance.entry.id} in {self.commands.config} "
                       f"(new expiry and reason), or rebuild {image} with the fix, then `{run}`",
                **timing,
            )
        return verdict(Verdict.FRESH, f"scanned {format_duration(age)} ago; warnings start {rfc3339(warn_at)}, "
                                      f"admission refuses it from {rfc3339(deadline)}{_suppressed_text(result)}",
                       action="-", **timing)

    def unreachable(
        self, image: ImageRef, error: BaseException, now: datetime, *, digest: str | None = None,
        hint: str | None = None,
    ) -> ImageVerdict:
        """The verdict for an image whose registry failed (after retries, where the caller retries)."""
        text, host = str(image), image.registry
        if hint is None:  # the kind of failure says what to do; a failure of unknown kind: check the registry
            hint = (error.hint if isinstance(error, VulnattestError) else "") or (
                f"check that {host} is up and reachable from here")
        # our errors say what happened; anything else (a bug) is named by its type too
        reason = str(error) if isinstance(error, VulnattestError) else f"{type(error).__name__}: {error}"
        return ImageVerdict(
            image=text, verdict=Verdict.UNREACHABLE, reason=reason or type(error).__name__,
            action=f"{hint}, then `{self.commands.status(text)}`", checked_at=now, digest=digest,
        )

    def _policy(self, image: str, selected: Sequence[AttestationCheck], now: datetime) -> PolicyResult | str:
        policy = policy_for(self.policy, image, dict(self.vex))
        if not policy.active:
            return PolicyResult()
        result = PolicyResult()
        for check in selected:
            scanner = VulnPredicate.read(check.predicate or {}).scanner
            try:
                report = scanner.result if scanner else None
                result = result.merged(evaluate_report(policy, report, now))
            except ScanError as e:
                return (f"cannot check the policy: scanner.result of attestation {short_digest(check.layer_digest)} "
                        f"is not a Trivy report ({e})")
        return result

    def _pending_vex(self, image: str, digest: str, result: PolicyResult,
                     attached: Sequence[VexDocument]) -> dict[Finding, Suppression]:
        """The violations the image's own VEX attestations suppress, each with its statement. Admission reads them
        only through the report (the scan hands them to Trivy), so they wait for the next scan; the deny list beats
        them there too."""
        if not attached:
            return {}
        denied = policy_for(self.policy, image).deny
        pending = [s for s in suppressions_for(attached, ImageRef.parse(image).with_digest(digest))
                   if not {s.vulnerability, *s.aliases} & denied]
        covered: dict[Finding, Suppression] = {}
        for violation in result.violations:
            found = next((s for s in pending if s.covers(violation.finding)), None)
            if found is not None:
                covered.setdefault(violation.finding, found)
        return covered

    def _policy_action(self, image: str) -> str:
        return (f"rebuild {image} with the fixed packages and run `{self.commands.run(image)}`, or accept them "
                f"under policy.allow in {self.commands.config} with a reason and an expiry")


def _suppressed_text(result: PolicyResult) -> str:
    """``; VEX suppresses 1 finding(s): CVE-… in busybox: not_affected: … (VEX vex.json)``, or nothing."""
    if not result.suppressed:
        return ""
    shown = _first_few([s.describe() for s in result.suppressed])
    return f"; VEX suppresses {len(result.suppressed)} finding(s): {shown}"


def _failures(checks: Iterable[AttestationCheck]) -> str:
    return _first_few(list(dict.fromkeys(f"{c.reason} [{c.failed.value if c.failed else 'ok'}]" for c in checks)))


def _first_few(items: Sequence[str]) -> str:
    """The first `_SHOWN` of `items`, then how many more: ``a; b; c; and 2 more``."""
    more = f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


def _signature_hint(checks: Iterable[AttestationCheck]) -> str:
    if any(c.failed is Check.SIGNATURE for c in checks):
        return ("; if the signer changed (a rotated key, a new CI identity), trust it in signing.public_keys or "
                "signing.identities, otherwise someone else wrote it: audit who can push to the repository")
    return ""


_LAYOUT_NAMES = {"legacy": "the .att attestations", "bundle": "the Sigstore bundles"}


def worst_first(verdicts: Iterable[ImageVerdict]) -> list[ImageVerdict]:
    """Verdicts sorted worst first, then by earliest deadline."""
    return sorted(verdicts, key=ImageVerdict.sort_key)


def verdict_counts(verdicts: Iterable[ImageVerdict]) -> dict[Verdict, int]:
    """How many images have each verdict, every verdict listed, worst first."""
    counts = Counter(v.verdict for v in verdicts)
    return {kind: counts.get(kind, 0) for kind in _WORST_FIRST}


def counts_text(verdicts: Iterable[ImageVerdict]) -> str:
    """E.g. ``12 image(s): 9 fresh, 2 expiring, 1 stale`` (verdicts with no image left out)."""
    listed = list(verdicts)
    parts = [f"{n} {kind.value}" for kind, n in verdict_counts(listed).items() if n]
    return f"{len(listed)} image(s)" + (": " + ", ".join(parts) if parts else "")


def fleet_markdown(verdicts: Sequence[ImageVerdict], *, title: str = "check-freshness",
                   problems: Sequence[str] = ()) -> str:
    """The fleet table: verdict counts, then every image that is not fresh, worst first, with its deadline."""
    bad = [v for v in worst_first(verdicts) if not v.ok]
    lines = [f"# {title}", "", f"**{counts_text(verdicts)}**", "", "| verdict | images |", "|---|---|"]
    lines += [f"| {kind.value} | {n} |" for kind, n in verdict_counts(verdicts).items()]
    if problems:
        lines += ["", "## Problems with this run", ""] + [f"- {md_cell(p)}" for p in problems]
    lines += ["", "## Not fresh, worst first" if bad else "## Every image is fresh", ""]
    if bad:
        lines += ["| verdict | image | digest | age | deadline | reason | action |", "|---|---|---|---|---|---|---|"]
        for v in bad:
            age = format_duration(v.age) if v.age is not None else "-"
            lines.append(f"| **{v.verdict.value}** | `{v.image}` | `{short_digest(v.digest)}` | {age} | "
                         f"{v.deadline_text()} | {md_cell(v.reason)} | `{md_cell(v.action)}` |")
    return "\n".join(lines) + "\n"


def fleet_rows(verdicts: Sequence[ImageVerdict]) -> list[dict[str, str]]:
    """Every image, worst first, as rows of the fleet table (the Prefect UI shows them as a table artifact)."""
    return [{
        "image": v.image, "digest": short_digest(v.digest), "verdict": v.verdict.value,
        "age": format_duration(v.age) if v.age is not None else "-", "deadline": v.deadline_text(),
        "findings C H M L U": counts_by_initial(v.last_scan.counts if v.last_scan else None),
    } for v in worst_first(verdicts)]


def probe_registry(client: RegistryClient, timeout: float = 10.0) -> None:
    """Check the registry answers the distribution API (``GET /v2/``); a login challenge counts as an answer.

    Raises TransientRegistryError when it cannot be reached or answers 429/5xx, RegistryError when what answers is
    not a registry.
    """
    url = f"{client.base_url}/v2/"
    try:
        status = client.api_status(timeout)
    except httpx.TransportError as e:
        raise RegistryUnreachableError(
            f"{client.host}: cannot reach {url} ({type(e).__name__}); check the host, the port and "
            "`registries.<host>.insecure` in the config", registry=client.host,
        ) from e
    except httpx.RequestError as e:  # too many redirects, say: whatever answers is not a registry
        raise RegistryError(f"{client.host}: {url} answered in a way no registry does ({type(e).__name__})") from e
    if is_transient_status(status):
        raise TransientRegistryError(f"{client.host}: {url} answered {status}; the registry is failing")
    if status == 404:
        raise RegistryError(f"{client.host}: {url} answered 404; this host does not serve the registry API")


def check_fleet(
    checker: FreshnessChecker, registries: Registries, images: Sequence[ImageRef], *, concurrency: int = 4,
    now: datetime | None = None,
) -> list[ImageVerdict]:
    """Check every image once, without retries: a registry that fails now makes its images `unreachable`.

    Each registry is probed first, so an outage costs one request per registry, not one timeout per image.
    """
    hosts = sorted({image.registry for image in images})
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="freshness") as pool:
        probes = dict(zip(hosts, pool.map(lambda host: _probe_error(registries.for_host(host)), hosts), strict=True))

        def one(image: ImageRef) -> ImageVerdict:
            moment = now or datetime.now(UTC)
            down = probes[image.registry]
            if down is not None:
                return checker.unreachable(image, down, moment)
            try:
                return checker.check(registries.for_image(image), image, moment)
            except VulnattestError as e:
                return checker.unreachable(image, e, moment)
            except Exception as e:  # a bug checking one image must not hide the others (logged with its traceback)
                log.exception("checking %s crashed", image)
                return checker.unreachable(image, e, moment, hint="this is a vulnattest bug: report it")

        return list(pool.map(one, images))


def _probe_error(client: RegistryClient) -> VulnattestError | None:
    try:
        probe_registry(client)
    except VulnattestError as e:
        log.warning("registry %s is unreachable: %s", client.host, e)
        return e
    return None
