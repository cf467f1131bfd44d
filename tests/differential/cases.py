"""Attestations as an attacker or a buggy signer could leave them in an image's ``.att`` tag: generated from valid
ones by mutating what such a writer controls (time formats and zones, base64 forms, JSON field names and
duplicates, payload types, media types and annotations, layer order and count, signatures, subjects and predicate
types). Each case is the exact bytes to push, and a line that says what it is (so a disagreement can be replayed)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import strategies as st

from vulnattest.attestations.cosign import DSSE_LAYER, PREDICATE_ANNOTATION, SIGNATURE_ANNOTATION
from vulnattest.signing.interface import KeySigner, pae

VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
IN_TOTO = "application/vnd.in-toto+json"
AGES = {"fresh": timedelta(hours=1), "stale": timedelta(hours=200), "future": timedelta(hours=-3)}

# scanFinishedOn written in one of the forms a signer might use; Go's time.Parse(RFC3339) reads some of them
TIME_FORMATS = {
    "rfc3339": lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "fraction": lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    "fraction-comma": lambda t: t.strftime("%Y-%m-%dT%H:%M:%S,%fZ"),
    "offset": lambda t: (t + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+05:30"),
    "one-digit-hour": lambda t: t.strftime("%Y-%m-%dT") + str(t.hour) + t.strftime(":%M:%SZ"),
    "lowercase-t": lambda t: t.strftime("%Y-%m-%dt%H:%M:%SZ"),
    "lowercase-z": lambda t: t.strftime("%Y-%m-%dT%H:%M:%Sz"),
    "space": lambda t: t.strftime("%Y-%m-%d %H:%M:%SZ"),
    "no-zone": lambda t: t.strftime("%Y-%m-%dT%H:%M:%S"),
    "compact-offset": lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+0000"),
    "no-seconds": lambda t: t.strftime("%Y-%m-%dT%H:%MZ"),
    "date-only": lambda t: t.strftime("%Y-%m-%d"),
    "epoch-number": lambda t: int(t.timestamp()),
}


@dataclass(frozen=True)
class Layer:
    """One layer of the ``.att`` manifest: its blob, media type and annotations."""

    blob: bytes
    media_type: str | None = DSSE_LAYER
    annotations: dict[str, str] = field(default_factory=dict)




@dataclass(frozen=True)
class Statement:
    """What to put in one attestation (built as text, so field names and duplicates can be anything)."""

    age: str = "fresh"
    time_format: str = "rfc3339"
    predicate_type: str = VULN
    type_key: str = "predicateType"
    duplicate_type: str | None = None  # a second predicateType key after the first, with this value
    duplicate_predicate_age: str | None = None  # a second "predicate" key, its scan this old
    statement_type: str = "https://in-toto.io/Statement/v1"
    wrong_subject: bool = False
    extra_field: bool = False  # a field the in-toto statement does not define

    def text(self, digest: str, now: datetime) -> bytes:
        hex_digest = digest.removeprefix("sha256:")
        subject = ("0" * 64) if self.wrong_subject else hex_digest
        parts = [f'"_type":{json.dumps(self.statement_type)}', f'"{self.type_key}":{json.dumps(self.predicate_type)}']
        if self.duplicate_type is not None:
            parts.append(f'"predicateType":{json.dumps(self.duplicate_type)}')
        parts.append(f'"subject":[{{"name":"image","digest":{{"sha256":"{subject}"}}}}]')
        parts.append(f'"predicate":{_predicate(now - AGES[self.age], self.time_format)}')
        if self.extra_field:
            parts.append('"comment":"scanned nightly"')
        if self.duplicate_predicate_age is not None:
            parts.append(f'"predicate":{_predicate(now - AGES[self.duplicate_predicate_age], "rfc3339")}')
        return ("{" + ",".join(parts) + "}").encode()


def _predicate(finished: datetime, time_format: str) -> str:
    return json.dumps({
        "invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.76.0", "version": "0.76.0",
                    "result": {"SchemaVersion": 2, "Results": []}},
        "metadata": {"scanStartedOn": TIME_FORMATS["rfc3339"](finished - timedelta(seconds=5)),
                     "scanFinishedOn": TIME_FORMATS[time_format](finished)},
    }, separators=(",", ":"))


@dataclass(frozen=True)
class Envelope:
    """How the DSSE envelope around a statement is written and signed."""

    statement: Statement = Statement()
    signer: str = "ours"  # ours, other, none, both (an unverifiable signature first, then ours)
    payload_type: str = IN_TOTO
    base64_form: str = "standard"  # standard, newlines, url-safe, unpadded
    payload_key: str = "payload"
    payload_type_key: str = "payloadType"
    media_type: str | None = DSSE_LAYER
    annotation: str | None = VULN

    def layer(self, digest: str, now: datetime, keys: dict[str, KeySigner]) -> Layer:
        payload = self.statement.text(digest, now)
        signatures = []
        if self.signer in ("both",):
            signatures.append(keys["other"].sign(pae(self.payload_type, payload)))
        if self.signer in ("ours", "both"):
            signatures.append(keys["ours"].sign(pae(self.payload_type, payload)))
        if self.signer == "other":
            signatures.append(keys["other"].sign(pae(self.payload_type, payload)))
        encoded = _b64(payload, self.base64_form)
        sigs = ",".join(f'{{"keyid":"","sig":"{base64.b64encode(s).decode()}"}}' for s in signatures)
        blob = (f'{{"{self.payload_type_key}":{json.dumps(self.payload_type)},"{self.payload_key}":"{encoded}",'
                f'"signatures":[{sigs}]}}').encode()
        annotations = {SIGNATURE_ANNOTATION: ""}
        if self.annotation is not None:
            annotations[PREDICATE_ANNOTATION] = self.annotation
        return Layer(blob, self.media_type, annotations)


def _b64(data: bytes, form: str) -> str:
    text = base64.b64encode(data).decode()
    if form == "newlines":
        return "\\n".join(text[i:i + 64] for i in range(0, len(text), 64))  # JSON-escaped newlines
    if form == "url-safe":
        return base64.urlsafe_b64encode(data).decode()
    if form == "unpadded":
        return text.rstrip("=")
    return text


statements = st.builds(
    Statement,
    age=st.sampled_from(sorted(AGES)),
    time_format=st.sampled_from(sorted(TIME_FORMATS)),
    predicate_type=st.sampled_from([VULN, VULN.removeprefix("https://"), "https://spdx.dev/Document"]),
    type_key=st.sampled_from(["predicateType", "PredicateType", "predicatetype"]),
    duplicate_type=st.one_of(st.none(), st.sampled_from([VULN, "https://spdx.dev/Document"])),
    duplicate_predicate_age=st.one_of(st.none(), st.sampled_from(sorted(AGES))),
    statement_type=st.sampled_from(["https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"]),
    wrong_subject=st.booleans(),
    extra_field=st.booleans(),
)
# most attestations are close to valid: the mutations are drawn one or two at a time
plain = Statement()
near_valid_statements = st.one_of(
    st.just(plain), st.just(Statement(age="stale")),
    st.builds(Statement, age=st.sampled_from(sorted(AGES)), time_format=st.sampled_from(sorted(TIME_FORMATS))),
    statements,
)
envelopes = st.builds(
    Envelope,
    statement=near_valid_statements,
    signer=st.sampled_from(["ours", "ours", "ours", "other", "none", "both"]),
    payload_type=st.sampled_from([IN_TOTO, IN_TOTO, "application/json"]),
    base64_form=st.sampled_from(["standard", "standard", "newlines", "url-safe", "unpadded"]),
    payload_key=st.sampled_from(["payload", "payload", "Payload"]),
    payload_type_key=st.sampled_from(["payloadType", "payloadType", "PayloadType"]),
    media_type=st.sampled_from([DSSE_LAYER, DSSE_LAYER, "application/octet-stream", None]),
    annotation=st.sampled_from([VULN, VULN, None, "https://spdx.dev/Document"]),
)
near_valid_envelopes = st.one_of(
    st.just(Envelope()), st.builds(Envelope, statement=near_valid_statements),
    st.builds(Envelope, statement=st.just(plain), signer=st.sampled_from(["ours", "other", "none", "both"])),
    envelopes,
)


@dataclass(frozen=True)
class AttTag:
    """One generated ``.att`` tag: its attestations in layer order, and the kind of manifest that holds them."""

    envelopes: tuple[Envelope, ...]
    # manifest (OCI), docker (Docker schema 2), or an index in front of the manifest: index-amd64, index-no-platform
    # (a child without a platform), index-arm64-first (an arm64 child, then the amd64 one), index-arm64 (no amd64)
    kind: str = "manifest"

    def layers(self, digest: str, now: datetime, keys: dict[str, KeySigner]) -> tuple[Layer, ...]:
        return tuple(envelope.layer(digest, now, keys) for envelope in self.envelopes)


ATT_KINDS = ["manifest"] * 6 + ["docker", "index-amd64", "index-no-platform", "index-arm64-first", "index-arm64"]
att_tags = st.builds(AttTag, envelopes=st.lists(near_valid_envelopes, min_size=1, max_size=3).map(tuple),
                     kind=st.sampled_from(ATT_KINDS))
