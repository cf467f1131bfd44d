"""The in-toto statement and the cosign vuln predicate (cosign's COSIGN_VULN_ATTESTATION_SPEC)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import orjson

from vulnattest import __version__
from vulnattest.registry import ResolvedImage
from vulnattest.scanners.interface import ScanReport
from vulnattest.storage import VerifiedReport
from vulnattest.text import rfc3339
from vulnattest.wire import (
    InvocationParameters,
    PredicateInvocation,
    PredicateScanner,
    ReportLocation,
    ScanMetadata,
    Statement,
    Subject,
    VulnPredicate,
)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"  # v0.1 is what older cosign wrote; verifiers accept both
VULN_PREDICATE_TYPE = "https://cosign.sigstore.dev/attestation/vuln/v1"
BUILDER_ID = f"https://github.com/vulnattest/vulnattest@v{__version__}"


@dataclass(frozen=True)
class Invocation:
    """What ran the scan: for a flow run, its id and UI address."""

    event_id: str = ""
    uri: str = ""


def vuln_statement(report: ScanReport, verified: VerifiedReport, invocation: Invocation) -> bytes:
    """Serialise the statement for `report`, naming the verified stored copy in ``invocation.parameters``.

    The report goes in as the compact JSON it already is: spliced in place of a one-off marker, rather than decoded
    and encoded again (a real image's report is megabytes, and tens of times that decoded)."""
    marker = f"vulnattest-report-{secrets.token_hex(16)}"
    image: ResolvedImage = report.image
    predicate = VulnPredicate(
        invocation=PredicateInvocation(
            parameters=InvocationParameters(
                report=ReportLocation(uri=verified.uri, sha256=verified.sha256),
                platform=image.platform, scanned_manifest=image.scan_digest,
            ),
            uri=invocation.uri, event_id=invocation.event_id, builder_id=BUILDER_ID,
        ),
        scanner=PredicateScanner.read(report.scanner.predicate_scanner(marker)),
        metadata=ScanMetadata(scan_started_on=rfc3339(report.started), scan_finished_on=rfc3339(report.finished)),
    )
    statement = Statement(
        type=STATEMENT_TYPE, predicate_type=VULN_PREDICATE_TYPE,
        subject=[Subject(name=image.image.name, digest={"sha256": image.digest.removeprefix("sha256:")})],
        predicate=predicate,
    ).model_dump(mode="json", exclude_unset=True)
    head, found, tail = orjson.dumps(statement).partition(orjson.dumps(marker))
    if not found:
        raise AssertionError("the report marker went missing from the statement")
    return head + report.result_json() + tail
