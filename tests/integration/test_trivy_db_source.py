"""The vulnerability DB is always fetched over verified TLS: a registry configured `insecure` speaks plain HTTP for its
own images alone, and a DB source whose certificate nobody vouches for is refused, in both scanning modes."""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vulnattest.demo.registry import LocalRegistry
from vulnattest.demo.trivydb import DEMO_ADVISORIES, write_trivy_db
from vulnattest.errors import VulnattestError
from vulnattest.registry import OCI_MANIFEST
from vulnattest.scanners.trivy import STANDALONE, TrivyScanner, TrivyServer

pytestmark = pytest.mark.skipif(shutil.which("trivy") is None, reason="trivy not on PATH")

DB_LAYER = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"  # what Trivy looks for in its DB artifact


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.attacker.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def db_artifact(cache: Path) -> bytes:
    """The demo DB as the layer of Trivy's DB artifact: a gzipped tar of trivy.db and metadata.json."""
    write_trivy_db(cache, DEMO_ADVISORIES)
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        for name in ("trivy.db", "metadata.json"):
            tar.add(cache / "db" / name, arcname=name)
    return gzip.compress(packed.getvalue(), mtime=0)


@pytest.fixture(scope="module")
def tls_db_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS registry on loopback with a self-signed certificate, serving an edited Trivy DB as `<host>/trivy-db:2`
    (pushed through a plain-HTTP registry on the same storage); yields its host and its certificate."""
    directory = tmp_path_factory.mktemp("tls-db")
    layer = db_artifact(directory / "built")
    with LocalRegistry() as plain:
        client = plain.client()
        config = client.push_blob("trivy-db", b"{}")
        layer_digest = client.push_blob("trivy-db", layer)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.aquasec.trivy.config.v1+json", "digest": config,
                               "size": 2},
                    "layers": [{"mediaType": DB_LAYER, "digest": layer_digest, "size": len(layer),
                                "annotations": {"org.opencontainers.image.title": "db.tar.gz"}}]}
        client.put_manifest("trivy-db", "2", json.dumps(manifest).encode(), OCI_MANIFEST)
        certificate, key = self_signed(directory)
        with LocalRegistry(tls=(certificate, key), storage=plain.storage) as served:
            yield served.host, certificate


def test_the_db_source_serves_a_db_to_whoever_trusts_its_certificate(
    tls_db_source: tuple[str, Path], tmp_path: Path
) -> None:
    """The control: the source is a working DB artifact, refused below for its certificate alone."""
    host, certificate = tls_db_source
    done = subprocess.run(
        ["trivy", "image", "--download-db-only", "--db-repository", f"{host}/trivy-db:2", "--cache-dir",
         str(tmp_path), "--quiet", "--skip-version-check", "--disable-telemetry", "--config", ""],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "SSL_CERT_FILE": str(certificate)},
    )

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "db" / "trivy.db").stat().st_size > 0


def test_an_insecure_registry_does_not_make_a_standalone_db_download_insecure(
    tls_db_source: tuple[str, Path], tmp_path: Path
) -> None:
    host, _ = tls_db_source
    scanner = TrivyScanner(cache_dir=tmp_path, server=STANDALONE, db_repository=f"{host}/trivy-db:2",
                           insecure_registries=frozenset({host}))

    with pytest.raises(VulnattestError, match="cannot download the vulnerability DB") as refused:
        scanner.open()

    assert "certificate" in str(refused.value)
    assert not (tmp_path / "db" / "trivy.db").exists()


def test_a_local_trivy_server_refuses_a_db_source_with_an_unverified_certificate(
    tls_db_source: tuple[str, Path], tmp_path: Path
) -> None:
    host, _ = tls_db_source
    server = TrivyServer(cache_dir=tmp_path, db_repository=f"{host}/trivy-db:2")

    with pytest.raises(VulnattestError, match="certificate"):
        server.start(timeout=60)

    assert not (tmp_path / "db" / "trivy.db").exists()
