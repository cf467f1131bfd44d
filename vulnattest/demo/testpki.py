"""A throwaway, Sigstore-shaped PKI for tests and demos; never for production.

It has what a private Sigstore deployment has: a root and an intermediate CA issuing short-lived Fulcio-style
certificates (SAN identity, OIDC issuer extensions, code-signing usage, an embedded SCT from a CT log key), and a
Rekor log key that signs entries' Signed Entry Timestamps. `FakeSigstoreServer` serves the two HTTP calls
sigstore-python makes when it signs (Fulcio ``/api/v2/signingCert`` and Rekor ``/api/v1/log/entries``) on a
loopback port, so keyless signing runs end to end with no network; `trust_config_json` points sigstore-python at it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from vulnattest.signing.certificates import (
    OIDC_ISSUER_V1,
    OIDC_ISSUER_V2,
    TRUSTED_ROOT_MEDIA_TYPE,
    RekorBundle,
    log_id_of,
)

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


REKOR_ORIGIN = "rekor.test - 2605736670972794746"


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def der_utf8(text: str) -> bytes:
    """A DER UTF8String."""
    raw = text.encode()
    return b"\x0c" + _der_length(len(raw)) + raw


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CertificateAuthority:
    """A CA certificate and its key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def root(cls, name: str = "vulnattest test root", *, not_after: datetime | None = None) -> CertificateAuthority:
        """A self-signed root CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vulnattest tests"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_EPOCH)
            .not_valid_after(not_after or _EPOCH + timedelta(days=365 * 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def intermediate(self, name: str = "vulnattest test intermediate") -> CertificateAuthority:
        """A CA signed by this one (Fulcio issues from an intermediate)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vulnattest tests"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_EPOCH).not_valid_after(self.certificate.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return CertificateAuthority(certificate, key)


@dataclass
class TestSigstore:
    """A root and intermediate CA, a CT log key and a Rekor key: everything a keyless signature is checked with."""

    __test__ = False  # not a pytest test class

    root: CertificateAuthority = field(default_factory=CertificateAuthority.root)
    intermediate: CertificateAuthority | None = None
    ctlog_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    _log_index: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.intermediate is None:
            self.intermediate = self.root.intermediate()

    @property
    def issuing(self) -> CertificateAuthority:
        """The CA that issues leaf certificates."""
        assert self.intermediate is not None  # noqa: S101  # set in __post_init__
        return self.intermediate

    def chain_pem(self) -> bytes:
        """Intermediate then root, PEM: what cosign puts in ``dev.sigstore.cosign/chain``."""
        return _pem(self.issuing.certificate) + _pem(self.root.certificate)

    def roots_pem(self) -> bytes:
        """The root certificate, PEM: Kyverno's ``roots``."""
        return _pem(self.root.certificate)

    def rekor_public_pem(self) -> bytes:
        """The Rekor public key, PEM."""
        return self.rekor_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def ctlog_public_pem(self) -> bytes:
        """The CT log public key, PEM."""
        return self.ctlog_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def issue(
        self, public_key: ec.EllipticCurvePublicKey, *, subject: str, issuer: str,
        not_before: datetime | None = None, lifetime: timedelta = timedelta(minutes=10), sct: bool = True,
        ca: CertificateAuthority | None = None,
    ) -> x509.Certificate:
        """A Fulcio-style leaf: empty subject, critical SAN (an email, or a URI when `subject` has ``://``), the
        OIDC issuer in both extensions, code signing, and an embedded SCT unless `sct` is False."""
        ca = ca or self.issuing
        start = (not_before or datetime.now(UTC)).replace(microsecond=0)
        name: x509.GeneralName = (x509.UniformResourceIdentifier(subject) if "://" in subject
                                  else x509.RFC822Name(subject))
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.certificate.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + lifetime)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([name]), critical=True)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2, der_utf8(issuer)), critical=False)
        )
        if not sct:
            return builder.sign(ca.key, hashes.SHA256())
        # The SCT signs the precertificate: the same TBSCertificate without the SCT extension (RFC 6962 3.2)
        precert = builder.sign(ca.key, hashes.SHA256())
        extension = self._sct_list(precert.tbs_certificate_bytes, ca.key.public_key(), start)
        return builder.add_extension(
            x509.UnrecognizedExtension(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, extension), critical=False,
        ).sign(ca.key, hashes.SHA256())

    def _sct_list(self, tbs: bytes, issuer_key: ec.EllipticCurvePublicKey, when: datetime) -> bytes:
        millis = int(when.timestamp() * 1000)
        signed = (struct.pack("!BBQH", 0, 0, millis, 1) + hashlib.sha256(_spki(issuer_key)).digest()
                  + len(tbs).to_bytes(3, "big") + tbs + struct.pack("!H", 0))
        signature = self.ctlog_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (b"\x00" + log_id_of(self.ctlog_key.public_key()) + struct.pack("!QH", millis, 0)
               + struct.pack("!BBH", 4, 3, len(signature)) + signature)
        tls_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        return b"\x04" + _der_length(len(tls_list)) + tls_list

    def log_dsse(
        self, envelope_json: bytes, certificate: x509.Certificate, *, integrated_at: datetime | None = None,
        kind: str = "dsse",
    ) -> tuple[RekorBundle, dict[str, Any]]:
        """Log a DSSE envelope as Rekor v1 does, as a dsse/0.0.1 entry (sigstore-python, cosign v3) or, with `kind`
        ``intoto``, an intoto/0.0.2 one (cosign v2): return cosign's bundle and Rekor's API answer."""
        envelope = json.loads(envelope_json)
        envelope_hash = {"algorithm": "sha256", "value": hashlib.sha256(envelope_json).hexdigest()}
        payload = base64.b64decode(envelope["payload"])
        payload_hash = {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}
        verifier = base64.b64encode(_pem(certificate)).decode()
        if kind == "intoto":  # rekor pkg/types/intoto/v0.0.2: sig is the envelope's base64 text, base64-encoded
            body = rfc8785.dumps({"apiVersion": "0.0.2", "kind": "intoto", "spec": {"content": {
                "envelope": {"payloadType": envelope["payloadType"],
                             "signatures": [{"sig": base64.b64encode(s["sig"].encode()).decode(),
                                             "publicKey": verifier} for s in envelope["signatures"]]},
                "hash": envelope_hash, "payloadHash": payload_hash}}})
        else:
            body = rfc8785.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
                "envelopeHash": envelope_hash, "payloadHash": payload_hash,
                "signatures": [{"signature": s["sig"], "verifier": verifier} for s in envelope["signatures"]]}})
        with self._lock:
            index, self._log_index = self._log_index, self._log_index + 1
        moment = integrated_at or datetime.now(UTC)
        unsigned = RekorBundle(b"", body, int(moment.timestamp()), index, log_id_of(self.rekor_key.public_key()))
        signature = self.rekor_key.sign(rfc8785.dumps(unsigned.payload()), ec.ECDSA(hashes.SHA256()))
        bundle = RekorBundle(signature, body, unsigned.integrated_time, index, unsigned.log_id)
        leaf_hash = hashlib.sha256(b"\x00" + body).hexdigest()
        answer = {hashlib.sha256(body).hexdigest(): {
            "body": base64.b64encode(body).decode(), "integratedTime": bundle.integrated_time,
            "logID": bundle.log_id.hex(), "logIndex": index,
            "verification": {
                "signedEntryTimestamp": base64.b64encode(signature).decode(),
                # a one-leaf tree per entry, its signed tree head a checkpoint in Rekor v1's form (verifiers check it)
                "inclusionProof": {"logIndex": 0, "rootHash": leaf_hash, "treeSize": 1, "hashes": [],
                                   "checkpoint": self._checkpoint(bytes.fromhex(leaf_hash))},
            },
        }}
        return bundle, answer

    def _checkpoint(self, root_hash: bytes, tree_size: int = 1) -> str:
        """A signed checkpoint as Rekor v1 writes one (rekor ``pkg/util``: a signed note whose origin ends with the tree
        id, signed over the note text, the key named by the first four bytes of the sha256 of its DER key)."""
        text = f"{REKOR_ORIGIN}\n{tree_size}\n{_b64(root_hash)}\n"
        signature = self.rekor_key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
        key_hash = hashlib.sha256(_spki(self.rekor_key.public_key())).digest()[:4]
        return f"{text}\n\u2014 {REKOR_ORIGIN.split()[0]} {_b64(key_hash + signature)}\n"

    def trusted_root_json(self, *, rekor_url: str = "http://rekor.invalid", fulcio_url: str = "http://fulcio.invalid",
                          ctlog_url: str = "http://ctlog.invalid") -> bytes:
        """This PKI as a Sigstore ``trusted_root.json``."""
        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url, "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": base64.b64encode(_spki(key.public_key())).decode(),
                              "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": base64.b64encode(log_id_of(key.public_key())).decode()},
            }

        der = [c.certificate.public_bytes(serialization.Encoding.DER) for c in (self.issuing, self.root)]
        return json.dumps({
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [log(self.rekor_key, rekor_url)],
            "certificateAuthorities": [{
                "subject": {"organization": "vulnattest tests", "commonName": "vulnattest test root"},
                "uri": fulcio_url,
                "certChain": {"certificates": [{"rawBytes": base64.b64encode(d).decode()} for d in der]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
            "ctlogs": [log(self.ctlog_key, ctlog_url)],
            "timestampAuthorities": [],
        }, indent=2).encode()

    def trust_config_json(self, fulcio_url: str, rekor_url: str) -> bytes:
        """A sigstore-python ``ClientTrustConfig``: this trust root, and Fulcio and Rekor at the given URLs."""
        service = {"majorApiVersion": 1, "validFor": {"start": "2020-01-01T00:00:00Z"}, "operator": "vulnattest tests"}
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": json.loads(self.trusted_root_json(rekor_url=rekor_url, fulcio_url=fulcio_url)),
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [{"url": fulcio_url, **service}],
                "oidcUrls": [],
                "rekorTlogUrls": [{"url": rekor_url, **service}],
                "tsaUrls": [],
                "rekorTlogConfig": {"selector": "ANY"},
                "tsaConfig": {"selector": "ANY"},
            },
        }, indent=2).encode()


def identity_token(*, subject: str, issuer: str, lifetime: timedelta = timedelta(minutes=5)) -> str:
    """An unsigned-looking OIDC token with the claims Fulcio and sigstore-python read (audience ``sigstore``).

    Its signature is a throwaway HMAC: sigstore-python does not verify tokens (Fulcio does, and the fake does not).
    """
    import jwt

    now = datetime.now(UTC)
    claims = {"iss": issuer, "sub": subject, "email": subject, "email_verified": True, "aud": "sigstore",
              "iat": int(now.timestamp()), "nbf": int(now.timestamp()), "exp": int((now + lifetime).timestamp())}
    return jwt.encode(claims, "not-a-secret-" + "x" * 32, algorithm="HS256")


class FakeSigstoreServer:
    """Fulcio's signingCert and Rekor's log/entries on one loopback port, backed by a `TestSigstore`."""

    def __init__(self, pki: TestSigstore) -> None:
        self.pki = pki
        self.requests: list[str] = []
        self.certificate_lifetime = timedelta(minutes=10)  # Fulcio's
        self.failures: list[int] = []  # statuses to answer the next requests with, as a failing service would
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[FakeSigstoreServer]:
        """Serve until the block ends."""
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: the base class writes to stderr
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.requests.append(self.path)
                if fake.failures:
                    self.send_response(fake.failures.pop(0))
                    self.end_headers()
                    self.wfile.write(b'{"code": 0, "message": "failing as told"}')
                    return
                try:
                    if self.path == "/api/v2/signingCert":
                        answer = fake._sign_certificate(body, self.headers.get("Authorization", ""))
                    elif self.path == "/api/v1/log/entries":
                        answer = fake._log_entry(body)
                    else:
                        self.send_error(404)
                        return
                except (ValueError, KeyError) as e:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(json.dumps({"code": 400, "message": str(e)}).encode())
                    return
                data = json.dumps(answer).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _sign_certificate(self, body: bytes, authorization: str) -> dict[str, Any]:
        import jwt

        claims = jwt.decode(authorization.removeprefix("Bearer "), options={"verify_signature": False})
        csr = x509.load_pem_x509_csr(base64.b64decode(json.loads(body)["certificateSigningRequest"]))
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("only ECDSA keys")
        leaf = self.pki.issue(public, subject=str(claims.get("email") or claims["sub"]), issuer=str(claims["iss"]),
                              lifetime=self.certificate_lifetime)
        chain = [leaf, self.pki.issuing.certificate, self.pki.root.certificate]
        return {"signedCertificateEmbeddedSct": {"chain": {"certificates": [_pem(c).decode() for c in chain]}}}

    def _log_entry(self, body: bytes) -> dict[str, Any]:
        proposed = json.loads(body)
        if (proposed.get("kind"), proposed.get("apiVersion")) != ("dsse", "0.0.1"):
            raise ValueError(f"only dsse/0.0.1 entries, not {proposed.get('kind')}/{proposed.get('apiVersion')}")
        content = proposed["spec"]["proposedContent"]
        certificate = x509.load_pem_x509_certificate(base64.b64decode(content["verifiers"][0]))
        _, answer = self.pki.log_dsse(content["envelope"].encode(), certificate)
        return answer
