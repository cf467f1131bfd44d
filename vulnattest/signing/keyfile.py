"""Signing with an ECDSA P-256 key in a file: PEM (PKCS#8 or SEC1, optionally encrypted) or cosign's ``cosign.key``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner

from vulnattest.errors import KeyPasswordError, SigningError
from vulnattest.signing.cosign_keys import (
    COSIGN_PRIVATE_NAME,
    COSIGN_PUBLIC_NAME,
    cosign_password,
    cosign_private_key_pem,
    is_cosign_key,
    load_cosign_private_key,
    public_key_pem,
    write_key_pair,
)
from vulnattest.signing.interface import KeySigner, fingerprint

PASSWORD_ENV = ("VULNATTEST_KEY_PASSWORD", "COSIGN_PASSWORD")
PRIVATE_NAME, PUBLIC_NAME = "vulnattest.key", "vulnattest.pub"


def key_password(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The key password from the environment, if one is set."""
    for name in PASSWORD_ENV:
        if environ.get(name):
            return environ[name].encode()
    return None


class KeyFileSigner(KeySigner):
    """Signs with an ECDSA P-256 private key held in memory; the key never leaves this object."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if private_key.curve.name != "secp256r1":
            raise SigningError("only ECDSA P-256 keys are supported, as cosign generates them")
        self._signer = CryptoSigner(private_key)
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = fingerprint(der)
        self._der = der
        self.public_key_pem = public_key_pem(private_key)

    def __repr__(self) -> str:
        return f"KeyFileSigner(key_id={self._key_id!r})"

    @classmethod
    def from_file(cls, path: Path, password: bytes | None = None) -> KeyFileSigner:
        """Load the key at `path` (PEM or ``cosign.key``); the password defaults to the environment's."""
        return cls(load_private_key(path, password))

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return self._key_id

    def public_key_der(self) -> bytes:
        """The public key, DER SubjectPublicKeyInfo."""
        return self._der

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature over `data`, DER encoded."""
        return bytes.fromhex(self._signer.sign(data).signature)


def load_private_key(
    path: Path, password: bytes | None = None, environ: Mapping[str, str] = os.environ,
) -> ec.EllipticCurvePrivateKey:
    """Read an ECDSA P-256 private key from `path`, in PEM or cosign's format.

    The password defaults to VULNATTEST_KEY_PASSWORD or COSIGN_PASSWORD; a cosign key may have an empty one.
    """
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise SigningError(
            f"cannot read signing key {path}: {e.strerror}; create one with `vulnattest keys generate "
            f"{path.parent}` or set signing.key"
        ) from e
    if is_cosign_key(pem):
        cosign_pw = password if password is not None else cosign_password(environ)
        if cosign_pw is None:
            raise KeyPasswordError(f"{path} is a cosign key: set COSIGN_PASSWORD (empty if it has none)")
        return load_cosign_private_key(pem, cosign_pw, str(path))
    password = password if password is not None else key_password(environ)
    try:
        key = serialization.load_pem_private_key(pem, password=password if b"ENCRYPTED" in pem else None)
    except TypeError as e:
        raise KeyPasswordError(f"{path} is encrypted: set VULNATTEST_KEY_PASSWORD") from e
    except ValueError as e:
        # cryptography's message never contains the password; keep it generic all the same
        error = KeyPasswordError if password and b"ENCRYPTED" in pem else SigningError
        raise error(f"cannot load signing key {path}: wrong password or not a PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningError(f"{path} is not an ECDSA P-256 key; vulnattest signs with ECDSA P-256 as cosign does")
    return key


def pem_private_key(key: ec.EllipticCurvePrivateKey, password: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when `password` is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def generate_keypair(directory: Path, password: bytes | None = None) -> tuple[Path, Path]:
    """Write a new P-256 key pair as ``vulnattest.key`` (mode 0600) and ``vulnattest.pub``; never overwrite."""
    private, public = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    key = ec.generate_private_key(ec.SECP256R1())
    write_key_pair(private, public, pem_private_key(key, password), public_key_pem(key))
    return private, public


def import_cosign_key(
    source: Path, directory: Path, *, source_password: bytes, password: bytes | None,
) -> tuple[Path, Path]:
    """Convert a ``cosign.key`` into ``vulnattest.key`` / ``vulnattest.pub`` in `directory` (PKCS#8 PEM,
    encrypted when `password` is given)."""
    try:
        pem = source.read_bytes()
    except OSError as e:
        raise SigningError(f"cannot read {source}: {e.strerror}") from e
    if not is_cosign_key(pem):
        raise SigningError(f"{source} is not a cosign key (no ENCRYPTED SIGSTORE PRIVATE KEY block)")
    key = load_cosign_private_key(pem, source_password, str(source))
    private, public = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    write_key_pair(private, public, pem_private_key(key, password), public_key_pem(key))
    return private, public


def export_cosign_key(
    source: Path, directory: Path, *, source_password: bytes | None, password: bytes,
) -> tuple[Path, Path]:
    """Write the key at `source` as cosign's ``cosign.key`` / ``cosign.pub`` in `directory`, encrypted with
    `password` (cosign accepts an empty one)."""
    key = load_private_key(source, source_password)
    private, public = directory / COSIGN_PRIVATE_NAME, directory / COSIGN_PUBLIC_NAME
    write_key_pair(private, public, cosign_private_key_pem(key, password), public_key_pem(key))
    return private, public
