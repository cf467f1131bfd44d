"""Keyless signing through sigstore-python: an OIDC identity, a short-lived Fulcio certificate, a Rekor entry.

The result is laid out as cosign lays keyless attestations out in ``.att`` layers: the DSSE envelope, plus the leaf
certificate, its chain and a Rekor bundle (Signed Entry Timestamp and entry) in the layer annotations.

Where the identity token comes from, first found wins: ``identity_token_file`` (a Kubernetes projected
service-account token with audience ``sigstore``, re-read every time since it rotates), ``SIGSTORE_ID_TOKEN`` (cosign's
name; GitLab's ``id_tokens`` can set it), then the CI's ambient credential as sigstore-python's ``detect_credential``
finds it (GitHub Actions, Buildkite, GitLab, CircleCI, Google Cloud). Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from vulnattest.errors import SigningError, VerificationError, is_transient_status
from vulnattest.retrying import REQUEST_RETRIES
from vulnattest.signing.interface import CertificateMaterial, DsseSignature, TransientSigningError
from vulnattest.wire import RekorEntry, first_error

if TYPE_CHECKING:
    from sigstore.sign import Signer as SigstoreSigner

log = logging.getLogger(__name__)

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
TOKEN_ENV = ("SIGSTORE_ID_TOKEN",)
CERTIFICATE_MARGIN = timedelta(seconds=60)
"""A cached certificate with less time left is replaced: Rekor must log each entry before its certificate lapses,
or cosign, Kyverno and vulnattest all refuse the attestation."""

TokenSource = Callable[[], str]


def identity_token_source(
    token_file: Path | None = None, environ: Mapping[str, str] = os.environ,
) -> TokenSource:
    """Where the OIDC token comes from (see the module docstring); resolved at each signing session."""

    def token() -> str:
        if token_file is not None:
            try:
                return token_file.read_text().strip()
            except OSError as e:
                raise SigningError(f"cannot read the identity token file {token_file}: {e.strerror}") from e
        for name in TOKEN_ENV:
            if environ.get(name):
                return environ[name].strip()
        from sigstore.oidc import IdentityError, detect_credential

        try:
            ambient = detect_credential()
        except IdentityError as e:
            raise SigningError(f"cannot get the CI's ambient OIDC credential: {e}") from e
        if not ambient:
            raise SigningError(
                "keyless signing needs an OIDC identity: run in GitHub Actions (permissions: id-token: write), "
                "GitLab (id_tokens with aud sigstore, as SIGSTORE_ID_TOKEN) or Buildkite, set SIGSTORE_ID_TOKEN, or "
                "set signing.keyless.identity_token_file (e.g. a projected Kubernetes token with audience sigstore)"
            )
        return ambient

    return token


class KeylessSigner:
    """Signs in-toto statements keyless, with one cached ephemeral key and certificate until it expires."""

    def __init__(self, trust_config: Any, token_source: TokenSource) -> None:
        from sigstore.sign import SigningContext

        self._trust_config = trust_config
        self._context = SigningContext.from_trust_config(trust_config)
        self._token_source = token_source
        self._signer: SigstoreSigner | None = None
        self._not_after: datetime | None = None
        self._identity: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_trust_config_file(cls, path: Path | None, token_source: TokenSource) -> KeylessSigner:
        """Use the Sigstore deployment a ClientTrustConfig JSON file describes, or the public one when `path`
        is None (its trust root then comes through TUF, over the network)."""
        from sigstore.models import ClientTrustConfig

        try:
            config = ClientTrustConfig.production() if path is None else ClientTrustConfig.from_json(path.read_text())
        except OSError as e:
            raise SigningError(f"cannot read the Sigstore trust config {path}: {e.strerror}") from e
        except Exception as e:  # TUF, network and parse failures come in many types
            where = path or "the public Sigstore instance (TUF)"
            raise SigningError(f"cannot load the Sigstore trust config of {where}: {type(e).__name__}: {e}") from e
        return cls(config, token_source)

    def __repr__(self) -> str:
        return f"KeylessSigner(identity={self._identity!r})"

    @property
    def key_id(self) -> str:
        """``keyless``, with the certificate identity once one was issued."""
        return f"keyless:{self._identity}" if self._identity else "keyless"

    def close(self) -> None:
        """Nothing to close: sigstore keeps its Fulcio and Rekor sessions per thread, with no way to close them."""

    def sign_dsse(self, payload_type: str, payload: bytes) -> DsseSignature:
        """Sign an in-toto statement: Fulcio certifies an ephemeral key, Rekor logs the envelope."""
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise SigningError(f"keyless signing covers in-toto statements only, not {payload_type}")
        from sigstore.dsse import Statement
        from sigstore.errors import Error as SigstoreError

        try:
            statement = Statement(payload)
        except SigstoreError as e:
            # sigstore-python 4 signs in-toto Statement v1 only (cosign and Kyverno read v0.1 and v1 alike)
            raise SigningError(
                f"sigstore-python refuses this statement (it signs `_type: {STATEMENT_V1}` only): {_plain(e)}"
            ) from e
        return REQUEST_RETRIES.call(lambda: self._sign(statement), "keyless signing (Fulcio, Rekor)")

    def _sign(self, statement: Any) -> DsseSignature:
        """One try at signing: a certificate (cached) and a log entry; an outage of either is a TransientError."""
        from sigstore.errors import Error as SigstoreError

        from vulnattest.compat.sigstore import ExpiredCertificate  # raised by the public Signer

        for _attempt in range(2):
            signer = self._session()
            try:
                signed = self._to_cosign(signer.sign_dsse(statement).to_json())
            except (ExpiredCertificate, _LoggedTooLate):
                with self._lock:
                    self._signer, self._not_after = None, None  # the cached certificate lapsed: get a new one
                continue
            except SigningError:  # the bundle is not one cosign's layout can carry
                raise
            except SigstoreError as e:
                raise SigningError(f"keyless signing failed: {_plain(e)}") from e
            except Exception as e:  # Fulcio and Rekor client errors (requests' underneath)
                error = TransientSigningError if _worth_a_retry(e) else SigningError
                raise error(f"keyless signing failed talking to Fulcio or Rekor: {_plain(e)}") from e
            return signed
        raise SigningError("keyless signing certificate expired twice in a row; check the system clock")

    def _session(self) -> SigstoreSigner:
        from sigstore.errors import Error as SigstoreError
        from sigstore.oidc import IdentityToken

        with self._lock:
            if self._not_after is not None and self._not_after - datetime.now(UTC) < CERTIFICATE_MARGIN:
                self._signer, self._not_after = None, None  # too close to lapsing for Rekor to log an entry in time
            if self._signer is None:
                try:
                    token = IdentityToken(self._token_source())
                except SigstoreError as e:
                    raise SigningError(f"the OIDC identity token is not usable: {_plain(e)}") from e
                self._identity = token.identity
                try:
                    with self._context.signer(token, cache=True) as signer:
                        self._signer = signer
                except SigstoreError as e:
                    raise SigningError(f"Fulcio refused a signing certificate: {_plain(e)}") from e
                except Exception as e:  # Fulcio client errors (requests' underneath)
                    error = TransientSigningError if _worth_a_retry(e) else SigningError
                    raise error(f"cannot get a certificate from Fulcio: {_plain(e)}") from e
                log.info("keyless signing as %s (issuer %s)", token.identity, token.issuer)
            return self._signer

    def _to_cosign(self, bundle_json: str) -> DsseSignature:
        from vulnattest.attestations.bundle import SigstoreBundle  # attestations build on signing: import late

        try:
            bundle = SigstoreBundle.parse(bundle_json.encode(), "the bundle sigstore-python made")
            envelope = bundle.envelope("the bundle sigstore-python made")
            certificate = bundle.certificate()
        except VerificationError as e:
            raise SigningError(f"sigstore-python produced a bundle vulnattest cannot read: {e}") from e
        rekor = bundle.rekor_bundle()
        if rekor is None or certificate is None:
            raise SigningError(
                "the transparency log gave no Signed Entry Timestamp (a Rekor v2 log?); cosign's .att layout needs "
                "one: list a Rekor v1 log (majorApiVersion 1) in the trust config's signing config"
            )
        self._not_after = certificate.not_valid_after_utc
        if rekor.integrated_time > certificate.not_valid_after_utc.timestamp():
            raise _LoggedTooLate
        return DsseSignature(
            signature=envelope.signatures[0],
            material=CertificateMaterial(
                certificate=certificate.public_bytes(serialization.Encoding.PEM),
                chain=self._chain_pem(certificate), rekor_bundle=rekor.to_json(), bundle=bundle_json.encode(),
                envelope=_logged_envelope(bundle_json, rekor.body),
            ),
        )

    def _chain_pem(self, leaf: x509.Certificate) -> bytes:
        """The issuing chain, from the trust root's CA certificates (bundles carry the leaf only)."""
        authorities = self._trust_config.trusted_root.get_fulcio_certs()
        chain: list[x509.Certificate] = []
        current = leaf
        while current.issuer != current.subject and len(chain) < 5:
            issuer = next((c for c in authorities if c.subject == current.issuer), None)
            if issuer is None:
                break
            chain.append(issuer)
            current = issuer
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _logged_envelope(bundle_json: str, entry_body: bytes) -> bytes:
    """The envelope's JSON as sigstore-python sent it to Rekor (its public model's serialisation, which is how it
    serialises what it logs), checked against the entry's ``envelopeHash``."""
    from sigstore_models.intoto import Envelope as WireEnvelope

    logged = WireEnvelope.from_dict(json.loads(bundle_json)["dsseEnvelope"]).to_json().encode()
    try:
        recorded = RekorEntry.read_json(entry_body).spec.logged_envelope_hash("dsse")
    except ValidationError as e:
        raise SigningError(f"the Rekor entry sigstore-python returned is not one ({first_error(e)}): report this "
                           "with the sigstore version") from None
    if recorded is not None and recorded != hashlib.sha256(logged).hexdigest():
        raise SigningError("the envelope Rekor logged is not the one sigstore-python returned (its envelopeHash "
                           "differs), so cosign would refuse the .att layer: report this with the sigstore version")
    return logged


class _LoggedTooLate(Exception):
    """Rekor logged the entry after the certificate lapsed: no verifier accepts it."""


def _worth_a_retry(error: BaseException) -> bool:
    """Whether a Fulcio or Rekor failure may pass on a retry: no connection, a timeout, 429 or 5xx."""
    import requests

    current: BaseException | None = error
    while current is not None:
        if isinstance(current, requests.ConnectionError | requests.Timeout):
            return True
        if isinstance(current, requests.HTTPError) and current.response is not None:
            return is_transient_status(current.response.status_code)
        current = current.__cause__ or current.__context__
    return False


def _plain(error: Exception) -> str:
    """An error's message without anything that looks like a bearer token."""
    text = str(error) or type(error).__name__
    return " ".join("<token>" if word.count(".") == 2 and len(word) > 40 else word for word in text.split())
