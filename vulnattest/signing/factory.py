"""Build the configured signer and verifier: the one place that maps ``signing.key`` URIs to implementations.

``signing.key`` forms: a file path (PEM, or cosign's ``cosign.key``), ``awskms://[endpoint]/<key id|alias/name|arn>``,
or ``keyless``. Verification accepts the configured public keys (files or ``awskms://`` keys; by default the
signing key's own) and the configured certificate identities; an attestation passes when any of them accepts it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vulnattest.config import KEYLESS, SigningSettings
from vulnattest.errors import SigningError, VerificationError
from vulnattest.signing.certificates import CertificateIdentity, CertificateVerifier, TrustMaterial
from vulnattest.signing.interface import (
    CertificateMaterial,
    PublicKeyVerifier,
    Signer,
    TrustedKey,
    VerifiedSigner,
    Verifier,
    load_public_key,
)
from vulnattest.signing.keyfile import KeyFileSigner
from vulnattest.signing.kms import SCHEME as AWS_KMS_SCHEME


def signer_from_settings(
    settings: SigningSettings, *, password: bytes | None = None, environ: Mapping[str, str] = os.environ,
) -> Signer:
    """The signer ``signing.key`` names. `password` (e.g. from a Prefect Secret) overrides the environment's."""
    key = settings.key
    if isinstance(key, Path):
        return KeyFileSigner.from_file(key, password)
    if key == KEYLESS:
        from vulnattest.signing.keyless import KeylessSigner, identity_token_source

        tokens = identity_token_source(settings.keyless.identity_token_file, environ)
        return KeylessSigner.from_trust_config_file(settings.keyless.trust_config, tokens)
    if key.startswith(AWS_KMS_SCHEME):
        from vulnattest.signing.kms import AwsKmsSigner

        return AwsKmsSigner.from_uri(key)
    raise SigningError(f"unsupported signing.key {key!r}: use a file path, awskms://… or keyless")


def trusted_keys(refs: Sequence[Path | str]) -> list[TrustedKey]:
    """Load public keys from PEM files and ``awskms://`` URIs (GetPublicKey)."""
    keys = []
    for ref in refs:
        if isinstance(ref, Path):
            try:
                keys.append(load_public_key(ref.read_bytes(), str(ref)))
            except OSError as e:
                raise SigningError(f"cannot read public key {ref}: {e.strerror}; set signing.public_keys") from e
        elif ref.startswith(AWS_KMS_SCHEME):
            from vulnattest.signing.kms import kms_public_key

            keys.append(kms_public_key(ref))
        else:
            raise SigningError(f"unsupported public key {ref!r}: use a PEM file or awskms://…")
    return keys


def trust_material(settings: SigningSettings) -> TrustMaterial:
    """Private trust material from the configured files, else the public Sigstore instance's (through TUF)."""
    if settings.trusted_root or settings.roots:
        return TrustMaterial.from_files(
            trusted_root=settings.trusted_root, roots=settings.roots,
            rekor_public_keys=settings.rekor_public_keys, ctlog_public_keys=settings.ctlog_public_keys,
        )
    return TrustMaterial.public_good()


def certificate_identities(settings: SigningSettings) -> list[CertificateIdentity]:
    """The configured identities as domain objects."""
    return [CertificateIdentity(subject=i.subject, subject_regexp=i.subject_regexp, issuer=i.issuer,
                                issuer_regexp=i.issuer_regexp) for i in settings.identities]


def verifier_from_settings(settings: SigningSettings) -> Verifier:
    """Accept exactly what the config trusts: its public keys and its certificate identities."""
    verifiers: list[Verifier] = []
    refs = settings.trusted_public_keys()
    if refs:
        verifiers.append(PublicKeyVerifier(trusted_keys(refs)))
    if settings.identities:
        verifiers.append(CertificateVerifier(
            certificate_identities(settings), trust_material(settings),
            require_tlog=not settings.ignore_tlog, require_sct=not settings.ignore_sct,
        ))
    if not verifiers:
        raise SigningError(
            "nothing to verify with: signing.key is keyless, so set signing.identities (subject and issuer), "
            "or signing.public_keys"
        )
    return verifiers[0] if len(verifiers) == 1 else AnyVerifier(verifiers)


class AnyVerifier:
    """Accepts what any of its verifiers accepts (keys during a move to keyless, or several identities), or, with
    `count`, what that many of them accept (a Kyverno attestor set); `where` names the set in refusals."""

    def __init__(self, verifiers: Sequence[Verifier], count: int = 1, where: str | None = None) -> None:
        self.verifiers = tuple(verifiers)
        self.count = count
        self.where = where

    def verify_dsse(
        self, payload_type: str, payload: bytes, signatures: Sequence[bytes], material: CertificateMaterial | None,
    ) -> VerifiedSigner:
        """The first acceptance once `count` verifiers accepted; otherwise every refusal, joined."""
        accepted: list[VerifiedSigner] = []
        reasons = []
        for verifier in self.verifiers:
            try:
                accepted.append(verifier.verify_dsse(payload_type, payload, signatures, material))
            except VerificationError as e:
                reasons.append(str(e))
            if len(accepted) >= self.count:
                return accepted[0]
        refusals = "; and ".join(reasons)
        if self.where is None:
            raise VerificationError(refusals)
        raise VerificationError(f"{self.where}: {len(accepted)} of the {self.count} attestor(s) needed accept it: "
                                f"{refusals}")
