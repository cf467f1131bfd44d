"""Signers and verifiers behind one protocol each: key files, cloud KMS keys and keyless Sigstore identities.

Build them from the config with `vulnattest.signing.factory` (``signer_from_settings``, ``verifier_from_settings``);
Kyverno's matching attestors come from `vulnattest.signing.kyverno.kyverno_attestors`.
"""

from vulnattest.signing.interface import (
    CertificateMaterial,
    DsseSignature,
    PublicKeyVerifier,
    Signer,
    VerifiedSigner,
    Verifier,
)
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair

__all__ = [
    "CertificateMaterial",
    "DsseSignature",
    "KeyFileSigner",
    "PublicKeyVerifier",
    "Signer",
    "VerifiedSigner",
    "Verifier",
    "generate_keypair",
]
