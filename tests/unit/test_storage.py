"""Object keys that cannot escape the store, the local store, and the read-back tamper check."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vulnattest.errors import StoreError, TamperError, is_transient
from vulnattest.images import ImageRef
from vulnattest.storage import ObjectKey, open_store, report_key, verify_stored
from vulnattest.storage.local import LocalReportStore
from vulnattest.storage.s3 import S3ReportStore

DIGEST = "sha256:" + "c" * 64
FINISHED = datetime(2026, 11, 28, 1, 23, 45, 678000, tzinfo=UTC)


def test_report_key_is_built_from_registry_repository_digest_and_finish_time():
    key = report_key(ImageRef.parse(f"127.0.0.1:5000/demo/app@{DIGEST}"), FINISHED)
    assert key.path == f"reports/127.0.0.1_5000/demo/app/sha256-{'c' * 64}/20261128T012345.678000Z.trivy.json"


def test_report_key_needs_a_digest():
    with pytest.raises(StoreError, match="pinned to a digest"):
        report_key(ImageRef.parse("demo/app:1"), FINISHED)


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs/path", "a//b", "a/./b", "a/b/..", "a/\x00b", "a/.hidden", ""])
def test_unsafe_keys_are_refused(path: str):
    with pytest.raises(StoreError, match="unsafe object key"):
        ObjectKey(path)


@pytest.mark.parametrize("part", ["..", "../../x", "/etc", "a b", "ü", ".", "-rf"])
def test_joined_keys_are_cleaned_into_the_prefix(part: str, tmp_path: Path):
    key = ObjectKey.join("reports", part, "x.json")
    store = LocalReportStore(tmp_path)
    stored = store.put(key, b"{}", hashlib.sha256(b"{}").hexdigest())
    assert Path(stored.uri.removeprefix("file://")).is_relative_to(tmp_path)


def test_local_store_round_trip_records_the_sha256(tmp_path: Path):
    store = open_store((tmp_path / "reports").as_uri())
    body = b'{"SchemaVersion": 2}'
    sha = hashlib.sha256(body).hexdigest()
    stored = store.put(ObjectKey("reports/a/b.json"), body, sha)
    assert stored.sha256 == sha
    assert store.read(stored) == body
    assert (tmp_path / "reports/reports/a/b.json.sha256").read_text() == f"{sha}  b.json\n"
    assert verify_stored(store, stored, sha).uri == stored.uri
    assert store.get(ObjectKey("reports/missing.json")) is None


def test_a_changed_report_is_a_tamper_error_naming_both_hashes(tmp_path: Path):
    store = LocalReportStore(tmp_path)
    body = b'{"Results": []}'
    sha = hashlib.sha256(body).hexdigest()
    stored = store.put(ObjectKey("r.json"), body, sha)
    (tmp_path / "r.json").write_bytes(b'{"Results": [], "edited": true}')
    with pytest.raises(TamperError) as caught:
        verify_stored(store, stored, sha)
    message = str(caught.value)
    assert sha in message
    assert hashlib.sha256(b'{"Results": [], "edited": true}').hexdigest() in message
    assert "no attestation was made" in message


def test_a_missing_report_is_an_error(tmp_path: Path):
    store = LocalReportStore(tmp_path)
    stored = store.put(ObjectKey("r.json"), b"x", hashlib.sha256(b"x").hexdigest())
    (tmp_path / "r.json").unlink()
    with pytest.raises(StoreError, match="gone from the store"):
        verify_stored(store, stored, stored.sha256)


def test_unknown_store_schemes_are_refused():
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("gs://bucket/x")


@pytest.mark.parametrize(("code", "status", "transient", "says"), [
    ("SlowDown", 503, True, "retry later"),
    ("RequestTimeTooSkewed", 403, False, "clock is off"),  # a retry would be as skewed
    ("AccessDenied", 403, False, "credentials may use it"),
])
def test_s3_errors_say_whether_a_retry_can_help(code: str, status: int, transient: bool, says: str):
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StoreError, match=says) as raised:
            S3ReportStore("reports", "fleet", client).get(ObjectKey("x.json"))
    assert is_transient(raised.value) is transient
