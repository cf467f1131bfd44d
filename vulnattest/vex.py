"""OpenVEX documents (v0.2.0): statements, shipped with the software, that a vulnerability does not affect it.

A statement suppresses a finding when its status is ``not_affected`` or ``fixed`` (Trivy's ``--vex`` suppresses
both: ``fixed`` says the product as shipped carries the fix the scanner did not see), one of its products is the
image, and, when it lists subcomponents, the finding's package is one of them. Of the statements on one
vulnerability of one image, the latest (by its timestamp, else its document's) decides, so a later ``affected``
ends an earlier ``not_affected``.

A product is the image as an OCI purl, ``pkg:oci/<name>[@sha256:…][?repository_url=<registry>/<repository>]``,
the form Trivy matches (a part left out matches any; any other qualifier matches nothing here), or an image
reference: ``registry/repository`` (every tag and digest), ``…:tag`` or ``…@sha256:…``. Trivy reads only the purl
form at scan time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import httpx
from packageurl import PackageURL
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vulnattest.config import clear_text_off_host
from vulnattest.errors import ImageRefError, TransientError, VulnattestError, is_transient_status
from vulnattest.images import ImageRef
from vulnattest.registry import MAX_MANIFEST_BYTES, BodyTooLarge, BodyTooSlow, read_bounded
from vulnattest.scanners.interface import Finding

log = logging.getLogger(__name__)

OPENVEX_CONTEXT = "https://openvex.dev/ns"
"""The start of every OpenVEX ``@context`` (``https://openvex.dev/ns/v0.2.0``) and the predicate type of a VEX
attestation (vexctl writes the versioned form; both are read)."""
MAX_VEX_BYTES = MAX_MANIFEST_BYTES


class VexError(VulnattestError):
    """A VEX document cannot be read or is not valid OpenVEX."""


class TransientVexError(VexError, TransientError):
    """A VEX document's server failed in a way that may pass."""


class Status(StrEnum):
    """What a statement says of a vulnerability in its products."""

    NOT_AFFECTED = "not_affected"
    AFFECTED = "affected"
    FIXED = "fixed"
    UNDER_INVESTIGATION = "under_investigation"


SUPPRESSING = frozenset({Status.NOT_AFFECTED, Status.FIXED})

Justification = Literal[
    "component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist",
]


class _Model(BaseModel):
    # unknown keys are kept out, not refused: OpenVEX documents carry fields of later versions and tools
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, hide_input_in_errors=True)


class Vulnerability(_Model):
    """The vulnerability a statement is about: its name (a CVE or GHSA id) and other names for it."""

    name: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()


class Component(_Model):
    """A software component, named by a purl (or, for an image, an image reference)."""

    id: str = Field(alias="@id", min_length=1)


class Product(Component):
    """A product a statement covers, optionally narrowed to some of its packages."""

    subcomponents: tuple[Component, ...] = ()


class Statement(_Model):
    """What is known of one vulnerability in some products."""

    vulnerability: Vulnerability
    products: tuple[Product, ...]
    status: Status
    justification: Justification | None = None
    impact_statement: str | None = None
    action_statement: str | None = None
    status_notes: str | None = None
    timestamp: AwareDatetime | None = None

    @field_validator("products")
    @classmethod
    def _some_product(cls, value: tuple[Product, ...]) -> tuple[Product, ...]:
        if not value:
            raise ValueError("a statement names at least one product (the image, as pkg:oci/<name>@sha256:…)")
        return value

    @model_validator(mode="after")
    def _not_affected_says_why(self) -> Statement:
        if self.status is Status.NOT_AFFECTED and not (self.justification or self.impact_statement):
            raise ValueError("a not_affected statement needs a justification or an impact_statement")
        return self

    def reason(self) -> str:
        """Why it suppresses, for reports and alerts, e.g. ``not_affected: vulnerable_code_not_present (…)``."""
        why: str = self.justification or ""
        said = self.impact_statement or self.status_notes or self.action_statement
        if said:
            why = f"{why} ({said})" if why else said
        return f"{self.status.value}: {why}" if why else self.status.value


class VexDocument(_Model):
    """An OpenVEX document; `source` names the file, URL or attestation it came from."""

    context: str = Field(alias="@context")
    id: str = Field(alias="@id", min_length=1)
    author: str = Field(min_length=1)
    timestamp: AwareDatetime
    version: int = Field(1, ge=1)
    statements: tuple[Statement, ...]
    source: str = Field("<vex>", exclude=True)

    @field_validator("statements")
    @classmethod
    def _some_statement(cls, value: tuple[Statement, ...]) -> tuple[Statement, ...]:
        if not value:
            raise ValueError("a document holds at least one statement")
        return value

    @field_validator("context")
    @classmethod
    def _openvex(cls, value: str) -> str:
        if not value.startswith(OPENVEX_CONTEXT):
            raise ValueError(f"{value!r} is not an OpenVEX context ({OPENVEX_CONTEXT}/v0.2.0)")
        return value


def parse_vex(data: bytes | str, source: str) -> VexDocument:
    """Read an OpenVEX document; a VexError names `source`, the statement and the field that is wrong."""
    try:
        decoded = json.loads(data)
    except ValueError as e:
        raise VexError(f"{source}: not JSON ({e}); a VEX document is an OpenVEX JSON file") from None
    if not isinstance(decoded, dict):
        raise VexError(f"{source}: not an OpenVEX document (a JSON object with @context and statements)")
    try:
        return VexDocument.model_validate({**decoded, "source": source})
    except ValidationError as e:
        problems = []
        for error in e.errors():
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
            problems.append(f"{field or '(top level)'}: {error['msg'].removeprefix('Value error, ')}")
        raise VexError(f"{source}: not valid OpenVEX v0.2.0:\n  " + "\n  ".join(problems)) from None


def load_vex(location: str | Path, timeout: float = 30.0) -> VexDocument:
    """Read a VEX document from a file or an https:// URL (plain http:// only on this machine)."""
    text = str(location)
    if text.startswith(("https://", "http://")):
        return parse_vex(fetch_vex(text, timeout), shown_url(text))
    try:
        return parse_vex(Path(text).read_bytes(), text)
    except OSError as e:
        raise VexError(f"cannot read VEX file {text}: {e.strerror}; check policy.vex in the config") from e


def load_vex_documents(locations: Iterable[str], timeout: float = 30.0) -> dict[str, VexDocument]:
    """Every document at `locations`, by its location (as the config names it)."""
    return {location: load_vex(location, timeout) for location in dict.fromkeys(locations)}


def readable_vex_documents(locations: Iterable[str], timeout: float = 30.0) -> tuple[dict[str, VexDocument], list[str]]:
    """The documents at `locations` that can be read, by location, and what stopped the others: for a run, which
    goes on without a document it cannot read (and says so) rather than judging or scanning nothing."""
    documents, problems = {}, []
    for location in dict.fromkeys(locations):
        try:
            documents[location] = load_vex(location, timeout)
        except VexError as e:
            problems.append(f"{e} (left out this run)")
    return documents, problems


def shown_url(url: str) -> str:
    """`url` as it may be shown: without user info and query, where a token could be."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}{parsed.path}"


def fetch_vex(url: str, timeout: float = 30.0) -> bytes:
    """The body at `url`, at most `MAX_VEX_BYTES` and no slower than the registry client allows; errors show the
    URL without user info and query."""
    shown = shown_url(url)
    if urlparse(url).scheme not in ("http", "https") or clear_text_off_host(url) is not None:
        raise VexError(f"{shown}: VEX is fetched over https:// only (plain http:// on this machine alone)")
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client, client.stream("GET", url) as answer:
            if is_transient_status(answer.status_code):
                raise TransientVexError(f"{shown} answered {answer.status_code}; retry later")
            if answer.status_code != 200:
                raise VexError(f"{shown} answered {answer.status_code}, not the VEX document; check the URL")
            return read_bounded(answer, MAX_VEX_BYTES, timeout)
    except BodyTooLarge:
        raise VexError(f"{shown} sent more than {MAX_VEX_BYTES} bytes; no VEX document is that large") from None
    except BodyTooSlow as e:
        raise TransientVexError(f"{shown} sent {e.received} bytes too slowly and was cut off") from None
    except httpx.TransportError as e:
        raise TransientVexError(f"cannot fetch VEX from {shown} ({type(e).__name__})") from e


@dataclass(frozen=True)
class Suppression:
    """A statement that suppresses one vulnerability in one image (in some of its packages, when `packages`)."""

    vulnerability: str
    aliases: frozenset[str]
    reason: str
    source: str
    packages: tuple[str, ...] = ()
    """Package purls the statement is narrowed to; empty for every package."""

    def covers(self, finding: Finding) -> bool:
        """True when this suppresses `finding`: its id (or an alias), and its package when narrowed to some."""
        vuln_id = finding.vulnerability_id.upper()
        if vuln_id != self.vulnerability and vuln_id not in self.aliases:
            return False
        if not self.packages:
            return True
        return finding.purl is not None and any(purl_matches(p, finding.purl) for p in self.packages)

    def describe(self) -> str:
        """E.g. ``CVE-2099-0001 suppressed by VEX vex.json: not_affected: vulnerable_code_not_present``."""
        return f"{self.vulnerability} suppressed by VEX {self.source}: {self.reason}"


def suppressions_for(documents: Iterable[VexDocument], image: ImageRef | str) -> tuple[Suppression, ...]:
    """The suppressions the documents' statements make for `image`. Statements are taken oldest first; each ends
    the earlier ones it overlaps (a name or alias in common, and every package of theirs in its scope), so the
    latest word on a vulnerability decides, whatever name it uses."""
    ref = image if isinstance(image, ImageRef) else _parse(str(image))
    if ref is None:
        return ()
    matched: list[tuple[datetime, int, Statement, str, tuple[str, ...]]] = []
    for document in documents:
        for statement in document.statements:
            products = [p for p in statement.products if product_matches(p.id, ref)]
            if not products:
                continue
            packages = tuple(sorted({c.id for p in products for c in p.subcomponents})) \
                if all(p.subcomponents for p in products) else ()
            matched.append((statement.timestamp or document.timestamp, len(matched), statement, document.source,
                            packages))
    standing: list[tuple[frozenset[str], tuple[str, ...], Statement, str]] = []
    for _, _, statement, source, packages in sorted(matched, key=lambda m: (m[0], m[1])):
        names = frozenset(n.upper() for n in (statement.vulnerability.name, *statement.vulnerability.aliases))
        standing = [s for s in standing if not (s[0] & names and _within(s[1], packages))]
        standing.append((names, packages, statement, source))
    return tuple(
        Suppression(statement.vulnerability.name.upper(), names - {statement.vulnerability.name.upper()},
                    statement.reason(), source, packages)
        for names, packages, statement, source in standing if statement.status in SUPPRESSING
    )


def _within(earlier: tuple[str, ...], later: tuple[str, ...]) -> bool:
    """Whether a statement about packages `later` (none: every package) speaks for all of `earlier`'s."""
    return not later or (bool(earlier) and set(earlier) <= set(later))


def product_matches(product: str, image: ImageRef) -> bool:
    """True when a statement's product names `image` (an OCI purl or an image reference, see the module text)."""
    if product.startswith("pkg:"):
        purl = _purl(product)
        if purl is None or purl.type != "oci":
            return False
        if purl.name.lower() != image.repository.rpartition("/")[2].lower():
            return False
        if purl.version is not None and purl.version != image.digest:
            return False
        for key, value in purl.qualifiers.items():
            if key != "repository_url":
                return False
            named = _parse(value)
            if named is None or named.name != image.name:
                return False
        return True
    named = _parse(product)
    if named is None or named.name != image.name:
        return False
    if named.digest is not None:
        return named.digest == image.digest
    has_tag = ":" in product.rpartition("/")[2]
    return not has_tag or named.tag == image.tag


def purl_matches(pattern: str, purl: str) -> bool:
    """True when `purl` is the package `pattern` names: the same type, namespace and name, and the same version and
    qualifiers where `pattern` gives them (as Trivy matches subcomponents)."""
    wanted, found = _purl(pattern), _purl(purl)
    if wanted is None or found is None:
        return False
    if (wanted.type, wanted.namespace, wanted.name) != (found.type, found.namespace, found.name):
        return False
    if wanted.version is not None and wanted.version != found.version:
        return False
    return all(found.qualifiers.get(k) == v for k, v in wanted.qualifiers.items())


def _purl(text: str) -> PackageURL | None:
    """`text` as a package URL, None when it is not one."""
    try:
        return PackageURL.from_string(text)
    except ValueError:
        return None


def _parse(text: str) -> ImageRef | None:
    try:
        return ImageRef.parse(text)
    except ImageRefError:
        return None

