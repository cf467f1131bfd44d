"""Signers and verifiers behind one protocol."""

from vulnattest.signing.interface import PublicKeyVerifier, Signer
from vulnattest.signing.keyfile import KeyFileSigner, generate_keypair

__all__ = ["KeyFileSigner", "PublicKeyVerifier", "Signer", "generate_keypair"]
