"""cosign's encrypted key format (scrypt + secretbox), `keys import` / `keys export`, and signing with a cosign.key."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from vulnattest.attestations import sign_statement
from vulnattest.cli import app
from vulnattest.errors import SigningError
from vulnattest.signing.cosign_keys import (
    COSIGN_PEM_TYPE,
    SIGSTORE_PEM_TYPE,
    cosign_password,
    cosign_private_key_pem,
    decrypt,
    encrypt,
    load_cosign_private_key,
)
from vulnattest.signing.interface import PublicKeyVerifier, fingerprint, load_public_key
from vulnattest.signing.keyfile import KeyFileSigner, export_cosign_key, generate_keypair, import_cosign_key

pytest.importorskip("nacl", reason="cosign's key format needs PyNaCl: pip install pynacl")

PASSWORD = b"correct horse battery staple"


def _public_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _body(pem: bytes) -> Any:
    lines = pem.decode().strip().splitlines()
    return json.loads(base64.b64decode("".join(lines[1:-1])))


def test_written_keys_have_the_layout_cosign_reads():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = cosign_private_key_pem(key, PASSWORD)
    lines = pem.decode().splitlines()
    assert lines[0] == f"-----BEGIN {SIGSTORE_PEM_TYPE}-----"
    assert lines[-1] == f"-----END {SIGSTORE_PEM_TYPE}-----"
    assert all(len(line) <= 64 for line in lines[1:-1])  # Go's pem.Encode wraps at 64
    body = _body(pem)
    assert list(body) == ["kdf", "cipher", "ciphertext"]
    assert body["kdf"] == {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": body["kdf"]["salt"]}
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert body["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(body["cipher"]["nonce"])) == 24
    # secretbox adds a 16-byte Poly1305 tag to the PKCS#8 DER
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert len(base64.b64decode(body["ciphertext"])) == len(der) + 16


@pytest.mark.parametrize("password", [PASSWORD, b""])
def test_round_trip_gives_back_the_same_key(password: bytes):
    key = ec.generate_private_key(ec.SECP256R1())
    loaded = load_cosign_private_key(cosign_private_key_pem(key, password), password)
    assert _public_der(loaded) == _public_der(key)


def test_the_pre_2_0_pem_type_is_read_too():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = cosign_private_key_pem(key, PASSWORD).replace(SIGSTORE_PEM_TYPE.encode(), COSIGN_PEM_TYPE.encode())
    assert _public_der(load_cosign_private_key(pem, PASSWORD)) == _public_der(key)


@pytest.mark.parametrize("scrypt_n", [1 << 15, 1 << 17])
def test_the_legacy_and_owasp_scrypt_strengths_are_accepted(scrypt_n: int):
    assert decrypt(encrypt(b"secret bytes", b"pw", scrypt_n=scrypt_n), b"pw") == b"secret bytes"


def test_a_wrong_password_fails_without_echoing_it():
    pem = cosign_private_key_pem(ec.generate_private_key(ec.SECP256R1()), PASSWORD)
    with pytest.raises(SigningError, match="wrong password") as raised:
        load_cosign_private_key(pem, b"guess-123", "cosign.key")
    assert "guess-123" not in str(raised.value)
    assert PASSWORD.decode() not in str(raised.value)


def test_a_tampered_ciphertext_is_refused():
    data = json.loads(encrypt(b"secret bytes", b"pw", scrypt_n=1 << 15))
    sealed = bytearray(base64.b64decode(data["ciphertext"]))
    sealed[-1] ^= 1
    data["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(SigningError, match="cannot decrypt"):
        decrypt(json.dumps(data).encode(), b"pw")


def test_scrypt_parameters_outside_the_three_known_sets_are_refused_before_deriving():
    # a file claiming N=2^30 would otherwise make us allocate a terabyte
    data = json.loads(encrypt(b"x", b"pw", scrypt_n=1 << 15))
    data["kdf"]["params"]["N"] = 1 << 30
    with pytest.raises(SigningError, match="unsupported scrypt parameters"):
        decrypt(json.dumps(data).encode(), b"pw")


@pytest.mark.parametrize("junk", [b"{}", b"not json", b'{"kdf":{"name":"argon2"}}'])
def test_malformed_bodies_are_signing_errors(junk: bytes):
    with pytest.raises(SigningError, match="not in cosign's encrypted key format"):
        decrypt(junk, b"pw")


def test_a_non_p256_key_is_refused_with_the_reason():
    key = ec.generate_private_key(ec.SECP384R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    body = base64.b64encode(encrypt(der, b"pw", scrypt_n=1 << 15)).decode()
    pem = f"-----BEGIN {SIGSTORE_PEM_TYPE}-----\n{body}\n-----END {SIGSTORE_PEM_TYPE}-----\n".encode()
    with pytest.raises(SigningError, match="not an ECDSA P-256 key"):
        load_cosign_private_key(pem, b"pw")


def test_cosign_password_may_be_empty_and_wins_over_ours():
    assert cosign_password({"COSIGN_PASSWORD": "", "VULNATTEST_KEY_PASSWORD": "x"}) == b""
    assert cosign_password({"VULNATTEST_KEY_PASSWORD": "x"}) == b"x"
    assert cosign_password({}) is None


def test_a_cosign_key_signs_directly_with_cosign_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(cosign_private_key_pem(key, PASSWORD))
    monkeypatch.delenv("VULNATTEST_KEY_PASSWORD", raising=False)
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD.decode())
    signer = KeyFileSigner.from_file(tmp_path / "cosign.key")
    envelope = sign_statement(b"{}", signer)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verifier = PublicKeyVerifier([load_public_key(public, "cosign.pub")])
    assert envelope.verify(verifier) is verifier.keys[0]
    assert PASSWORD.decode() not in repr(signer)


def test_a_cosign_key_without_a_password_set_says_which_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "cosign.key").write_bytes(cosign_private_key_pem(ec.generate_private_key(ec.SECP256R1()), PASSWORD))
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    monkeypatch.delenv("VULNATTEST_KEY_PASSWORD", raising=False)
    with pytest.raises(SigningError, match="set COSIGN_PASSWORD"):
        KeyFileSigner.from_file(tmp_path / "cosign.key")


def test_import_then_export_keeps_the_key_and_encrypts_both_ways(tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(cosign_private_key_pem(key, PASSWORD))

    private, public = import_cosign_key(tmp_path / "cosign.key", tmp_path / "va", source_password=PASSWORD,
                                        password=b"ours")
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    assert KeyFileSigner.from_file(private, b"ours").key_id == fingerprint(_public_der(key))
    assert load_public_key(public.read_bytes(), "pub").key_id == fingerprint(_public_der(key))

    back, back_public = export_cosign_key(private, tmp_path / "back", source_password=b"ours", password=b"theirs")
    assert back.name == "cosign.key" and back_public.name == "cosign.pub"
    assert back.stat().st_mode & 0o777 == 0o600
    assert _public_der(load_cosign_private_key(back.read_bytes(), b"theirs")) == _public_der(key)
    assert back_public.read_bytes() == public.read_bytes()


def test_import_and_export_never_overwrite(tmp_path: Path):
    private, _ = generate_keypair(tmp_path)
    cosign_key, _ = export_cosign_key(private, tmp_path, source_password=None, password=b"x")
    before = cosign_key.read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        export_cosign_key(private, tmp_path, source_password=None, password=b"y")
    with pytest.raises(SigningError, match="already exists"):
        import_cosign_key(cosign_key, tmp_path, source_password=b"x", password=None)
    assert cosign_key.read_bytes() == before


def test_cli_import_and_export(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(cosign_private_key_pem(key, b"cosign-pw"))
    runner = CliRunner()
    with caplog.at_level(logging.DEBUG):
        imported = runner.invoke(app, ["keys", "import", str(tmp_path / "cosign.key"), "-o", str(tmp_path / "va")],
                                 env={"COSIGN_PASSWORD": "cosign-pw", "VULNATTEST_KEY_PASSWORD": "va-pw"})
        assert imported.exit_code == 0, imported.output
        exported = runner.invoke(app, ["keys", "export", str(tmp_path / "va" / "vulnattest.key"),
                                       "-o", str(tmp_path / "out")],
                                 env={"COSIGN_PASSWORD": "new-cosign-pw", "VULNATTEST_KEY_PASSWORD": "va-pw"})
        assert exported.exit_code == 0, exported.output
        wrong = runner.invoke(app, ["keys", "import", str(tmp_path / "cosign.key"), "-o", str(tmp_path / "x")],
                              env={"COSIGN_PASSWORD": "nope-pw", "VULNATTEST_KEY_PASSWORD": "va-pw"})
    assert wrong.exit_code == 2
    assert "wrong password" in " ".join(wrong.output.split())
    assert _public_der(load_cosign_private_key((tmp_path / "out" / "cosign.key").read_bytes(), b"new-cosign-pw")) \
        == _public_der(key)
    everything = imported.output + exported.output + wrong.output + caplog.text
    for secret in ("cosign-pw", "va-pw", "nope-pw"):
        assert secret not in everything


def test_cli_import_of_a_key_without_password_encrypts_with_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the help's way: no COSIGN_PASSWORD (cosign's empty password), VULNATTEST_KEY_PASSWORD for the output only
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(cosign_private_key_pem(key, b""))
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    imported = CliRunner().invoke(app, ["keys", "import", str(tmp_path / "cosign.key"), "-o", str(tmp_path / "va")],
                                  env={"VULNATTEST_KEY_PASSWORD": "new-pw"})
    assert imported.exit_code == 0, imported.output
    signer = KeyFileSigner.from_file(tmp_path / "va" / "vulnattest.key", b"new-pw")
    assert signer.key_id == PublicKeyVerifier.from_pem_files([tmp_path / "va" / "vulnattest.pub"]).keys[0].key_id


def test_cli_export_needs_cosign_password_set(tmp_path: Path):
    private, _ = generate_keypair(tmp_path)
    result = CliRunner().invoke(app, ["keys", "export", str(private), "-o", str(tmp_path / "out")],
                                env={"COSIGN_PASSWORD": None, "VULNATTEST_KEY_PASSWORD": None})
    assert result.exit_code == 2
    assert "COSIGN_PASSWORD" in result.output
    assert not (tmp_path / "out").exists()


def test_keys_generate_encrypts_unless_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runner = CliRunner()
    monkeypatch.delenv("VULNATTEST_KEY_PASSWORD", raising=False)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    refused = runner.invoke(app, ["keys", "generate", str(tmp_path / "none")])
    assert refused.exit_code != 0
    assert "set VULNATTEST_KEY_PASSWORD" in refused.output and "--no-password" in refused.output
    assert not (tmp_path / "none" / "vulnattest.key").exists()

    plain = runner.invoke(app, ["keys", "generate", "--no-password", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert "UNENCRYPTED" in plain.output
    assert b"-----BEGIN PRIVATE KEY-----" in (tmp_path / "plain" / "vulnattest.key").read_bytes()

    monkeypatch.setenv("VULNATTEST_KEY_PASSWORD", "correct horse")
    encrypted = runner.invoke(app, ["keys", "generate", str(tmp_path / "encrypted")])
    assert encrypted.exit_code == 0, encrypted.output
    assert "correct horse" not in encrypted.output
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in (tmp_path / "encrypted" / "vulnattest.key").read_bytes()
