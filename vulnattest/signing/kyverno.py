"""Kyverno attestor entries for the configured signers, so admission accepts exactly what ``vulnattest verify`` does.

Put them in one attestor set that needs one match: ``attestors: [{count: 1, entries: kyverno_attestors(…)}]``.

- Public keys become ``keys`` entries, one per key (PEM inline; an ``awskms://`` key as ``kms``, which needs Kyverno's
  service account to be allowed ``kms:GetPublicKey``). vulnattest does not log key-signed attestations in Rekor and
  key signatures carry no certificate, so these entries set ``rekor.ignoreTlog`` and ``ctlog.ignoreSCT``.
- Certificate identities become ``keyless`` entries with ``subject``/``subjectRegExp`` and ``issuer``/``issuerRegExp``.
  With private trust material, ``roots`` carries its CA certificates (intermediates too: Go's verifier takes any
  certificate in the roots pool as an anchor, and Kyverno passes no separate intermediates), and ``rekor.pubkey`` /
  ``ctlog.pubkey`` its log keys; with none, Kyverno uses the public Sigstore trust root, as verify does.
  ``signing.ignore_tlog`` / ``ignore_sct`` map to ``rekor.ignoreTlog`` / ``ctlog.ignoreSCT``.

`verifier_from_attestors` reads attestor sets back, as Kyverno evaluates them: every set must pass, and a set passes
when ``count`` of its entries (all of them when ``count`` is absent) accept the attestation. ``vulnattest verify
--policy`` uses it to show what a cluster running the policy will admit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vulnattest.config import SigningSettings
from vulnattest.errors import SigningError, VerificationError
from vulnattest.signing.certificates import (
    CertificateIdentity,
    CertificateVerifier,
    LogKey,
    TrustMaterial,
    load_pem_log_key,
)
from vulnattest.signing.factory import AnyVerifier
from vulnattest.signing.interface import (
    CertificateMaterial,
    PublicKeyVerifier,
    VerifiedSigner,
    Verifier,
    load_public_key,
)
from vulnattest.signing.kms import SCHEME as AWS_KMS_SCHEME

PUBLIC_REKOR_URL = "https://rekor.sigstore.dev"


def kyverno_attestors(settings: SigningSettings) -> list[dict[str, Any]]:
    """Attestor entries (``keys`` / ``keyless``) for every public key and certificate identity verify trusts."""
    entries: list[dict[str, Any]] = []
    rekor_url = settings.rekor_url or PUBLIC_REKOR_URL
    for ref in settings.trusted_public_keys():
        keys: dict[str, Any] = {"rekor": {"url": rekor_url, "ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}
        if isinstance(ref, Path):
            try:
                keys["publicKeys"] = ref.read_text()
            except OSError as e:
                raise SigningError(f"cannot read public key {ref}: {e.strerror}") from e
        elif ref.startswith(AWS_KMS_SCHEME):
            keys["kms"] = ref
        else:
            raise SigningError(f"unsupported public key {ref!r}")
        entries.append({"keys": keys})
    if settings.identities:
        private = _private_trust(settings)
        for identity in settings.identities:
            keyless: dict[str, Any] = {}
            if identity.subject is not None:
                keyless["subject"] = identity.subject
            else:
                keyless["subjectRegExp"] = identity.subject_regexp
            if identity.issuer is not None:
                keyless["issuer"] = identity.issuer
            else:
                keyless["issuerRegExp"] = identity.issuer_regexp
            keyless["rekor"] = _rekor(settings, private, rekor_url)
            keyless["ctlog"] = _ctlog(settings, private)
            if private is not None:
                keyless["roots"] = "".join(
                    c.public_bytes(serialization.Encoding.PEM).decode()
                    for c in (*private.intermediates, *private.roots))
            entries.append({"keyless": keyless})
    return entries


def _private_trust(settings: SigningSettings) -> TrustMaterial | None:
    if not (settings.trusted_root or settings.roots):
        return None
    return TrustMaterial.from_files(
        trusted_root=settings.trusted_root, roots=settings.roots,
        rekor_public_keys=settings.rekor_public_keys, ctlog_public_keys=settings.ctlog_public_keys,
    )


def _rekor(settings: SigningSettings, private: TrustMaterial | None, url: str) -> dict[str, Any]:
    if settings.ignore_tlog:
        return {"url": url, "ignoreTlog": True}
    rekor: dict[str, Any] = {"url": url}
    if private is not None and private.rekor_keys:
        rekor["pubkey"] = _pem_keys(private.rekor_keys)
    return rekor


def _ctlog(settings: SigningSettings, private: TrustMaterial | None) -> dict[str, Any]:
    if settings.ignore_sct:
        return {"ignoreSCT": True}
    if private is not None and private.ctlog_keys:
        return {"pubkey": _pem_keys(private.ctlog_keys)}
    return {}


def _pem_keys(keys: tuple[LogKey, ...]) -> str:
    return "".join(
        k.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        for k in keys)


def verifier_from_attestors(attestor_sets: Sequence[Mapping[str, Any]], source: str) -> Verifier:
    """A verifier that accepts what Kyverno accepts under these ``attestors`` (of a ``verifyImages`` attestation).

    An entry that cannot be checked here (another KMS, a malformed key) refuses, saying why, as it would accept
    nothing vulnattest signs; the set may still pass through its other entries.
    """
    if not attestor_sets:
        raise SigningError(f"{source}: no attestors")
    sets = []
    for index, attestor_set in enumerate(attestor_sets):
        where = f"{source}: attestor set {index + 1}"
        entries = [_entry_verifier(entry, f"{where}, entry {i + 1}")
                   for i, entry in enumerate(attestor_set.get("entries") or ())]
        count = attestor_set.get("count") or len(entries)
        if not entries or not isinstance(count, int) or count < 1:
            raise SigningError(f"{where}: needs entries and a count of at least 1, not {count!r}")
        sets.append(AnyVerifier(entries, count, where))
    return sets[0] if len(sets) == 1 else _AllOf(tuple(sets))


@dataclass(frozen=True)
class _AllOf:
    """Accepts when every attestor set does."""

    sets: tuple[Verifier, ...]

    def verify_dsse(
        self, payload_type: str, payload: bytes, signatures: Sequence[bytes], material: CertificateMaterial | None,
    ) -> VerifiedSigner:
        accepted = [s.verify_dsse(payload_type, payload, signatures, material) for s in self.sets]
        return accepted[0]


@dataclass(frozen=True)
class _Refuse:
    """An attestor nothing vulnattest writes can satisfy; says why."""

    reason: str

    def verify_dsse(
        self, payload_type: str, payload: bytes, signatures: Sequence[bytes], material: CertificateMaterial | None,
    ) -> VerifiedSigner:
        raise VerificationError(self.reason)


def _entry_verifier(entry: Mapping[str, Any], where: str) -> Verifier:
    try:
        if "keys" in entry:
            return _keys_verifier(entry["keys"] or {}, where)
        if "keyless" in entry:
            return _keyless_verifier(entry["keyless"] or {}, where)
        raise SigningError(f"{where}: only keys and keyless attestors are checked here, not {sorted(entry)}")
    except (SigningError, ValueError) as e:
        return _Refuse(str(e))


def _keys_verifier(keys: Mapping[str, Any], where: str) -> Verifier:
    if not (keys.get("rekor") or {}).get("ignoreTlog"):
        return _Refuse(f"{where} wants a Rekor entry for key signatures, and vulnattest logs none: "
                       "set rekor.ignoreTlog: true (as `vulnattest policy kyverno` does)")
    if keys.get("publicKeys"):
        return PublicKeyVerifier([load_public_key(pem, where) for pem in _pem_public_keys(keys["publicKeys"], where)])
    kms = keys.get("kms") or ""
    if kms.startswith(AWS_KMS_SCHEME):
        from vulnattest.signing.kms import kms_public_key

        return PublicKeyVerifier([kms_public_key(kms)])
    raise SigningError(f"{where}: only publicKeys and awskms:// kms keys are checked here")


def _keyless_verifier(keyless: Mapping[str, Any], where: str) -> Verifier:
    identity = CertificateIdentity(
        subject=keyless.get("subject"), subject_regexp=keyless.get("subjectRegExp"),
        issuer=keyless.get("issuer"), issuer_regexp=keyless.get("issuerRegExp"))
    rekor, ctlog = keyless.get("rekor") or {}, keyless.get("ctlog") or {}
    if keyless.get("roots"):
        trust = TrustMaterial(
            certificates=tuple(x509.load_pem_x509_certificates(keyless["roots"].encode())),
            rekor_keys=_log_keys(rekor.get("pubkey"), where), ctlog_keys=_log_keys(ctlog.get("pubkey"), where),
            source=where)
    else:
        trust = TrustMaterial.public_good()
    return CertificateVerifier([identity], trust, require_tlog=not rekor.get("ignoreTlog"),
                               require_sct=not ctlog.get("ignoreSCT"))


_PEM_PUBLIC_KEY = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def _pem_public_keys(text: str, where: str) -> list[bytes]:
    """Each PEM public key in `text` (Kyverno takes several, concatenated)."""
    pems = _PEM_PUBLIC_KEY.findall(text.encode())
    if not pems:
        raise SigningError(f"{where}: no PEM public key (-----BEGIN PUBLIC KEY-----) in it")
    return pems


def _log_keys(text: str | None, where: str) -> tuple[LogKey, ...]:
    return tuple(load_pem_log_key(pem, where) for pem in (_pem_public_keys(text, where) if text else ()))
