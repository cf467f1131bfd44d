"""Signing with an ECDSA P-256 key in a PEM file, optionally encrypted."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner

from vulnattest.errors import SigningError
from vulnattest.signing.interface import fingerprint

PASSWORD_ENV = ("VULNATTEST_KEY_PASSWORD", "COSIGN_PASSWORD")
PRIVATE_NAME, PUBLIC_NAME = "vulnattest.key", "vulnattest.pub"


def key_password(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The key password from the environment, if one is set."""
    for name in PASSWORD_ENV:
        if environ.get(name):
            return environ[name].encode()
    return None


class KeyFileSigner:
    """Signs with a PEM private key (PKCS#8 or SEC1, encrypted or not); the key never leaves this object."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if private_key.curve.name != "secp256r1":
            raise SigningError("only ECDSA P-256 keys are supported, as cosign generates them")
        self._signer = CryptoSigner(private_key)
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = fingerprint(der)
        self.public_key_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_file(cls, path: Path, password: bytes | None = None) -> KeyFileSigner:
        """Load the key at `path`; the password defaults to VULNATTEST_KEY_PASSWORD or COSIGN_PASSWORD."""
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise SigningError(
                f"cannot read signing key {path}: {e.strerror}; create one with `vulnattest keys generate "
                f"{path.parent}` or set signing.key"
            ) from e
        if b"ENCRYPTED SIGSTORE PRIVATE KEY" in pem or b"ENCRYPTED COSIGN PRIVATE KEY" in pem:
            raise SigningError(f"{path} is in cosign's own key format; convert it with `vulnattest keys import {path}`")
        password = password if password is not None else key_password()
        try:
            key = serialization.load_pem_private_key(pem, password=password if b"ENCRYPTED" in pem else None)
        except TypeError as e:
            raise SigningError(f"{path} is encrypted: set VULNATTEST_KEY_PASSWORD") from e
        except ValueError as e:
            # cryptography's message never contains the password; keep it generic all the same
            raise SigningError(f"cannot load signing key {path}: wrong password or not a PEM private key") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningError(f"{path} is not an ECDSA key; vulnattest signs with ECDSA P-256")
        return cls(key)

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return self._key_id

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature over `data`, DER encoded."""
        return bytes.fromhex(self._signer.sign(data).signature)


def generate_keypair(directory: Path, password: bytes | None = None) -> tuple[Path, Path]:
    """Write a new P-256 key pair as ``vulnattest.key`` (mode 0600) and ``vulnattest.pub``; never overwrite."""
    private, public = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path} already exists; move it away or choose another directory")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
