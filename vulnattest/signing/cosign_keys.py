"""cosign's own private-key format, read and written without cosign.

A ``cosign.key`` file is one PEM block, ``ENCRYPTED SIGSTORE PRIVATE KEY`` (``ENCRYPTED COSIGN PRIVATE KEY`` before
cosign 2.0), whose body is the JSON that go-securesystemslib's ``encrypted`` package writes::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": <base64, 32 bytes>},
     "cipher": {"name": "nacl/secretbox", "nonce": <base64, 24 bytes>},
     "ciphertext": <base64 of secretbox(PKCS#8 DER private key)>}

The secretbox key is scrypt(password, salt, N, r, p, 32 bytes). Only the three parameter sets that package writes
are accepted on read, so a tampered file cannot make us burn memory and time. cosign allows an empty password.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, ValidationError

from vulnattest.errors import KeyPasswordError, SigningError

if TYPE_CHECKING:
    from nacl.secret import SecretBox

SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
COSIGN_PRIVATE_NAME, COSIGN_PUBLIC_NAME = "cosign.key", "cosign.pub"
PYNACL_HINT = "cosign's key format needs PyNaCl (secretbox): `pip install pynacl`"

# go-securesystemslib encrypted: Legacy, Standard (the default it writes) and OWASP; r=8, p=1 throughout
_ALLOWED_N = (1 << 15, 1 << 16, 1 << 17)
_DEFAULT_N = 1 << 16
_SALT_SIZE, _NONCE_SIZE, _KEY_SIZE = 32, 24, 32


class _ScryptParams(BaseModel):
    model_config = ConfigDict(frozen=True)
    N: int
    r: int
    p: int


class _Kdf(BaseModel):
    name: Literal["scrypt"]
    params: _ScryptParams
    salt: str


class _Cipher(BaseModel):
    name: Literal["nacl/secretbox"]
    nonce: str


class _Encrypted(BaseModel):
    kdf: _Kdf
    cipher: _Cipher
    ciphertext: str


def cosign_password(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The password for a cosign-format key: COSIGN_PASSWORD (even empty, as cosign allows), else
    VULNATTEST_KEY_PASSWORD; None when neither is set.
    """
    for name in ("COSIGN_PASSWORD", "VULNATTEST_KEY_PASSWORD"):
        if name in environ:
            return environ[name].encode()
    return None


def is_cosign_key(pem: bytes) -> bool:
    """Whether `pem` holds a key in cosign's encrypted format."""
    return any(f"-----BEGIN {pem_type}-----".encode() in pem for pem_type in (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE))


def encrypt(plaintext: bytes, password: bytes, *, scrypt_n: int = _DEFAULT_N) -> bytes:
    """Encrypt `plaintext` the way go-securesystemslib's ``encrypted.Encrypt`` does; return its JSON."""
    if scrypt_n not in _ALLOWED_N:
        raise SigningError(f"scrypt N={scrypt_n} would not load in cosign; use one of {_ALLOWED_N}")
    salt, nonce = os.urandom(_SALT_SIZE), os.urandom(_NONCE_SIZE)
    key = Scrypt(salt=salt, length=_KEY_SIZE, n=scrypt_n, r=8, p=1).derive(password)
    # PyNaCl's ciphertext is MAC || encrypted, the layout Go's secretbox.Seal writes
    sealed = _secretbox(key).encrypt(plaintext, nonce).ciphertext
    return json.dumps({
        "kdf": {"name": "scrypt", "params": {"N": scrypt_n, "r": 8, "p": 1}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }, separators=(",", ":")).encode()


def decrypt(data: bytes, password: bytes, source: str = "cosign key") -> bytes:
    """Decrypt go-securesystemslib ``encrypted`` JSON; `source` names the file in errors."""
    try:
        wire = _Encrypted.model_validate_json(data)
        salt, nonce = _unb64(wire.kdf.salt), _unb64(wire.cipher.nonce)
        sealed = _unb64(wire.ciphertext)
    except (ValidationError, ValueError) as e:
        raise SigningError(f"{source} is not in cosign's encrypted key format: {_first_line(e)}") from e
    params = wire.kdf.params
    if params.N not in _ALLOWED_N or (params.r, params.p) != (8, 1):
        raise SigningError(f"{source}: unsupported scrypt parameters N={params.N} r={params.r} p={params.p}")
    if len(nonce) != _NONCE_SIZE:
        raise SigningError(f"{source}: the secretbox nonce is {len(nonce)} bytes, not {_NONCE_SIZE}")
    key = Scrypt(salt=salt, length=_KEY_SIZE, n=params.N, r=params.r, p=params.p).derive(password)
    box = _secretbox(key)
    from nacl.exceptions import CryptoError

    try:
        return bytes(box.decrypt(sealed, nonce))
    except CryptoError as e:
        raise KeyPasswordError(
            f"cannot decrypt {source}: wrong password (COSIGN_PASSWORD / VULNATTEST_KEY_PASSWORD) or a damaged file"
        ) from e


def load_cosign_private_key(pem: bytes, password: bytes, source: str = "cosign key") -> ec.EllipticCurvePrivateKey:
    """Decrypt a ``cosign.key`` and return its ECDSA P-256 key."""
    body = _pem_body(pem, (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE), source)
    der = decrypt(body, password, source)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as e:
        raise SigningError(f"{source}: the decrypted key is not PKCS#8") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningError(f"{source} is not an ECDSA P-256 key; vulnattest signs with ECDSA P-256 as cosign does")
    return key


def cosign_private_key_pem(key: ec.EllipticCurvePrivateKey, password: bytes, *, scrypt_n: int = _DEFAULT_N) -> bytes:
    """Serialise `key` as cosign's ``ENCRYPTED SIGSTORE PRIVATE KEY`` PEM."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return _pem_encode(SIGSTORE_PEM_TYPE, encrypt(der, password, scrypt_n=scrypt_n))


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The PKIX PEM public key, as ``cosign.pub`` holds it."""
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_key_pair(private: Path, public: Path, private_pem: bytes, public_pem: bytes) -> None:
    """Write a key pair: the private half with mode 0600; refuse to overwrite either file."""
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path} already exists; move it away or choose another directory")
    private.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public.write_bytes(public_pem)


def _secretbox(key: bytes) -> SecretBox:
    try:
        from nacl.secret import SecretBox
    except ImportError as e:
        raise SigningError(PYNACL_HINT) from e
    return SecretBox(key)


def _pem_body(pem: bytes, types: tuple[str, ...], source: str) -> bytes:
    text = pem.decode("ascii", errors="replace")
    for pem_type in types:
        begin, end = f"-----BEGIN {pem_type}-----", f"-----END {pem_type}-----"
        start = text.find(begin)
        if start < 0:
            continue
        stop = text.find(end, start)
        if stop < 0:
            raise SigningError(f"{source}: the {pem_type} block has no END line")
        try:
            return base64.b64decode("".join(text[start + len(begin):stop].split()), validate=True)
        except binascii.Error as e:
            raise SigningError(f"{source}: the {pem_type} block is not base64") from e
    raise SigningError(f"{source} holds no {' or '.join(types)} block")


def _pem_encode(pem_type: str, body: bytes) -> bytes:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([f"-----BEGIN {pem_type}-----", *lines, f"-----END {pem_type}-----", ""]).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0]
