"""Untrusted JSON as vulnattest reads it, and the same models where it writes that JSON: a registry's token and error
answers, OCI manifests and indexes, the in-toto statement and its cosign vuln predicate, Rekor entry bodies.

Each model reads as Go's ``encoding/json`` fills a struct, since what admission decides (cosign, Kyverno) is what Go
decodes: unknown fields are ignored, a null is an absent field, and a `GoObject` (`gocompat.go_json`) has its keys
matched case-insensitively, the last duplicate winning. A dict (``json.loads``, ``model_validate_json``) is read by
its exact keys, the last duplicate winning, as Go fills a map. A part marked `Lenient` that does not fit its type is
read as absent, where vulnattest (and admission) read on without it.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from vulnattest.gocompat import GoObject, as_map


def _absent_unless_valid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


Lenient = WrapValidator(_absent_unless_valid)
"""Marks an optional part read as absent (None) when it does not fit its type."""


Text = Annotated[str, BeforeValidator(lambda value: value if isinstance(value, str) else "")]
"""A string, read as empty when the JSON holds anything else there."""


def _go_map(value: Any) -> Any:
    return as_map(value) if isinstance(value, GoObject) else value


GoMap = Annotated[dict[str, Any], BeforeValidator(_go_map)]
"""A JSON object read as Go fills a ``map[string]…``: exact keys, the last duplicate winning."""


_READING: dict[str, bool] = {"wire": True}
"""The validation context of data read off the wire (its nulls are absent fields)."""


class Wire(BaseModel):
    """Base of every wire model: Go's struct decoding (see the module), aliases on the wire, Python names in code."""

    model_config = ConfigDict(validate_by_alias=True, validate_by_name=True, serialize_by_alias=True,
                              extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _as_go_reads(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, GoObject):
            found = ((alias, data.field(alias)) for alias in (f.alias or name for name, f in cls.model_fields.items()))
            return {alias: value for alias, value in found if value is not None}
        if isinstance(data, dict) and info.context is _READING:  # a model built in code keeps the None it was given
            return {key: value for key, value in data.items() if value is not None}
        return data

    @classmethod
    def read(cls, data: object) -> Self:
        """Validate decoded JSON (a dict, or a `GoObject` read as Go reads a struct); raise ValidationError."""
        return cls.model_validate(data, by_alias=True, by_name=False, context=_READING)

    @classmethod
    def read_json(cls, data: bytes | str) -> Self:
        """Validate JSON text by exact keys; raise ValidationError (a body that is not JSON included)."""
        return cls.model_validate_json(data, by_alias=True, by_name=False, context=_READING)

    def to_json(self) -> bytes:
        """Compact JSON of the fields that were set, by their wire names, in the model's order."""
        return self.model_dump_json(exclude_unset=True).encode()


def first_error(error: ValidationError) -> str:
    """The first problem pydantic found, with where: e.g. ``Field required at layers.0.digest``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{first['msg']} at {where}" if where else first["msg"]


# -- registry answers ----------------------------------------------------------------------------------------------


class TokenAnswer(Wire):
    """A token service's answer (distribution's token auth; OAuth2's ``access_token`` as well)."""

    token: str = ""
    access_token: str = ""

    @property
    def bearer(self) -> str:
        """The token to send, empty when the answer holds none."""
        return self.token or self.access_token


class _ErrorEntry(Wire):
    code: Any = None
    message: Any = None


class ErrorAnswer(Wire):
    """A registry's error body (``{"errors": [{"code", "message"}]}``)."""

    errors: Annotated[list[Annotated[_ErrorEntry | None, Lenient]] | None, Lenient] = None

    def detail(self) -> str:
        """``CODE: message; …``, empty when there are none."""
        return "; ".join(f"{e.code}: {e.message}" for e in self.errors or [] if e is not None)


class Platform(Wire):
    """An index entry's platform."""

    os: str = ""
    architecture: str = ""
    variant: str = ""

    def name(self) -> str:
        """``os/architecture[/variant]``."""
        return "/".join(filter(None, [self.os, self.architecture, self.variant]))


class Descriptor(Wire):
    """An OCI content descriptor. Fields vulnattest does not read are kept, so a descriptor it carries from one
    manifest into the next loses nothing."""

    model_config = ConfigDict(extra="allow")

    media_type: str = Field("", alias="mediaType")
    size: Annotated[StrictInt | None, Lenient] = None
    digest: str = ""
    artifact_type: str = Field("", alias="artifactType")
    annotations: dict[str, Any] = Field(default_factory=dict)
    platform: Platform | None = None


Descriptors = Annotated[list[Annotated[Descriptor | None, Lenient]] | None, Lenient]
"""A manifest's list of descriptors: None when it is not a list, an entry None when it is not a descriptor."""


class ManifestDocument(Wire):
    """An OCI image manifest or index (or Docker's schema 2 forms), as vulnattest reads and writes them."""

    schema_version: int | None = Field(None, alias="schemaVersion")
    media_type: Annotated[str | None, Lenient] = Field(None, alias="mediaType")
    artifact_type: Annotated[str | None, Lenient] = Field(None, alias="artifactType")
    config: Annotated[Descriptor | None, Lenient] = None
    layers: Descriptors = Field(default_factory=list)
    manifests: Descriptors = Field(default_factory=list)
    subject: Annotated[Descriptor | None, Lenient] = None
    annotations: Annotated[dict[str, Any] | None, Lenient] = None


# -- DSSE envelopes ----------------------------------------------------------------------------------------------------


class EnvelopeSignature(Wire):
    """One signature of a DSSE envelope: base64 of the signature over the PAE, and a key id (cosign leaves it
    empty)."""

    keyid: Annotated[str | None, Lenient] = None
    sig: str


class DsseEnvelope(Wire):
    """A DSSE envelope's JSON (alone, or inside a Sigstore bundle): the payload and its signatures, in base64."""

    payload_type: str = Field(alias="payloadType")
    payload: str
    signatures: list[EnvelopeSignature]


# -- the in-toto statement and the cosign vuln predicate -----------------------------------------------------------


class Subject(Wire):
    """A statement subject: what it names and its digests."""

    name: Annotated[str | None, Lenient] = None
    digest: GoMap = Field(default_factory=dict)


class Statement(Wire):
    """An in-toto statement as Go reads it into a struct. `predicate_type` and `predicate` keep whatever the JSON
    holds: admission compares the one exactly and reads the other as a map."""

    type: Annotated[str | None, Lenient] = Field(None, alias="_type")
    predicate_type: Any = Field(None, alias="predicateType")
    subject: Annotated[list[Annotated[Subject | None, Lenient]] | None, Lenient] = None
    predicate: Any = None

    def names(self, sha256_hex: str) -> bool:
        """Whether a subject has exactly this sha256 digest."""
        return any(s is not None and s.digest.get("sha256") == sha256_hex for s in self.subject or [])


class ReportLocation(Wire):
    """Where the verified copy of the scanner's report is stored."""

    uri: Annotated[str | None, Lenient] = None
    sha256: Annotated[str | None, Lenient] = None


class InvocationParameters(Wire):
    """What vulnattest records of a scan: the stored report, the platform and the manifest it scanned."""

    report: Annotated[ReportLocation | None, Lenient] = None
    platform: Annotated[str | None, Lenient] = None
    scanned_manifest: Annotated[str | None, Lenient] = Field(None, alias="scannedManifest")


class PredicateInvocation(Wire):
    """The predicate's ``invocation``."""

    parameters: Annotated[InvocationParameters | None, Lenient] = None
    uri: str = ""
    event_id: str = ""
    builder_id: str = Field("", alias="builder.id")


class ScannerDb(Wire):
    """The vulnerability database the scan used."""

    uri: str = ""
    version: str = ""
    updated_at: str | None = Field(None, alias="updatedAt")


class PredicateScanner(Wire):
    """The predicate's ``scanner``: which scanner, its database, and its whole report (``result``)."""

    uri: Text = ""
    version: Text = ""
    db: Annotated[ScannerDb | None, Lenient] = None
    result: Any = None


class ScanMetadata(Wire):
    """When the scan ran (RFC 3339 text, read with Go's rules where it counts)."""

    scan_started_on: Any = Field(None, alias="scanStartedOn")
    scan_finished_on: Any = Field(None, alias="scanFinishedOn")


class VulnPredicate(Wire):
    """The cosign vuln predicate (cosign's COSIGN_VULN_ATTESTATION_SPEC); a part that does not fit is absent."""

    invocation: Annotated[PredicateInvocation | None, Lenient] = None
    scanner: Annotated[PredicateScanner | None, Lenient] = None
    metadata: Annotated[ScanMetadata | None, Lenient] = None

    @property
    def scan_finished_on(self) -> Any:
        """``metadata.scanFinishedOn`` as the JSON holds it, None when absent."""
        return self.metadata.scan_finished_on if self.metadata else None

    @property
    def report_uri(self) -> str | None:
        """``invocation.parameters.report.uri``, None when absent."""
        parameters = self.invocation.parameters if self.invocation else None
        return parameters.report.uri if parameters and parameters.report else None


# -- Rekor entries ---------------------------------------------------------------------------------------------------


class RekorHash(Wire):
    """A hash a Rekor entry records."""

    algorithm: str = ""
    value: str | None = None


class RekorSignature(Wire):
    """A signature a Rekor entry records: ``signature``/``verifier`` (dsse), ``sig``/``publicKey`` (intoto)."""

    signature: Any = None
    verifier: Any = None
    sig: Any = None
    public_key: Any = Field(None, alias="publicKey")


class _IntotoEnvelope(Wire):
    signatures: list[Annotated[RekorSignature | None, Lenient]] = Field(default_factory=list)


class _IntotoContent(Wire):
    hash: RekorHash | None = None
    payload_hash: RekorHash | None = Field(None, alias="payloadHash")
    envelope: _IntotoEnvelope | None = None


class RekorSpec(Wire):
    """The ``spec`` of a ``dsse`` (0.0.1) or ``intoto`` (0.0.2) entry."""

    envelope_hash: RekorHash | None = Field(None, alias="envelopeHash")
    payload_hash: RekorHash | None = Field(None, alias="payloadHash")
    signatures: list[Annotated[RekorSignature | None, Lenient]] = Field(default_factory=list)
    content: _IntotoContent | None = None

    def logged_envelope_hash(self, kind: str) -> str | None:
        """The sha256 of the envelope the log recorded: ``envelopeHash`` for a dsse entry, ``content.hash`` for
        intoto (cosign's bundle hash reads either)."""
        recorded = self.envelope_hash if kind == "dsse" else self.content.hash if self.content else None
        return recorded.value if recorded else None


class RekorEntry(Wire):
    """A Rekor entry body (its canonicalised JSON)."""

    kind: str
    api_version: str = Field(alias="apiVersion")
    spec: RekorSpec
