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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from vulnattest.config import SigningSettings
from vulnattest.errors import SigningError
from vulnattest.signing.certificates import LogKey, TrustMaterial
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
