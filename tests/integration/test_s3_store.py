"""The S3 report store against moto's S3 server over HTTP."""

from __future__ import annotations

import base64
import hashlib
import uuid

import boto3
import pytest

from tests.conftest import short_timeouts
from vulnattest.errors import StoreError, TamperError, TransientStoreError
from vulnattest.storage import ObjectKey, open_store, verify_stored
from vulnattest.storage.s3 import S3ReportStore


def _bucket(endpoint: str, *, versioned: bool) -> str:
    name = f"reports-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def test_put_sends_a_sha256_checksum_and_records_it(s3_endpoint: str):
    bucket = _bucket(s3_endpoint, versioned=False)
    store = open_store(f"s3://{bucket}/fleet-a", endpoint_url=s3_endpoint, region="us-east-1")
    body = b'{"SchemaVersion": 2}'
    sha = hashlib.sha256(body).hexdigest()
    sent: list[dict[str, str]] = []
    # moto does not echo checksums back, so check what went over the wire
    assert isinstance(store, S3ReportStore)
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append({k.lower(): v for k, v in request.headers.items()})
    )
    stored = store.put(ObjectKey("reports/x.json"), body, sha)
    assert stored.uri == f"s3://{bucket}/fleet-a/reports/x.json"
    expected = base64.b64encode(bytes.fromhex(sha)).decode()
    assert [h.get("x-amz-checksum-sha256") for h in sent] == [expected.encode()]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = s3.head_object(Bucket=bucket, Key="fleet-a/reports/x.json")
    assert head["Metadata"]["sha256"] == sha
    assert verify_stored(store, stored, sha).sha256 == sha


def test_versioned_buckets_read_back_exactly_the_version_written(s3_endpoint: str):
    bucket = _bucket(s3_endpoint, versioned=True)
    store = open_store(f"s3://{bucket}", endpoint_url=s3_endpoint, region="us-east-1")
    first = store.put(ObjectKey("r.json"), b"one", hashlib.sha256(b"one").hexdigest())
    second = store.put(ObjectKey("r.json"), b"two", hashlib.sha256(b"two").hexdigest())
    assert first.version_id
    assert second.version_id
    assert first.version_id != second.version_id
    assert store.read(first) == b"one"
    assert store.get(ObjectKey("r.json")) == b"two"


def test_an_overwritten_report_fails_verification(s3_endpoint: str):
    bucket = _bucket(s3_endpoint, versioned=False)
    store = open_store(f"s3://{bucket}/p", endpoint_url=s3_endpoint, region="us-east-1")
    sha = hashlib.sha256(b"report").hexdigest()
    stored = store.put(ObjectKey("r.json"), b"report", sha)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").put_object(
        Bucket=bucket, Key="p/r.json", Body=b"forged"
    )
    with pytest.raises(TamperError, match=hashlib.sha256(b"forged").hexdigest()):
        verify_stored(store, stored, sha)


def test_a_missing_bucket_is_a_clear_error(s3_endpoint: str):
    store = S3ReportStore.from_url("s3://no-such-bucket/p", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(StoreError, match=r"cannot write s3://no-such-bucket/p/r\.json: NoSuchBucket"):
        store.put(ObjectKey("r.json"), b"x", hashlib.sha256(b"x").hexdigest())
    with pytest.raises(StoreError, match="NoSuchBucket"):
        store.get(ObjectKey("r.json"))  # a missing bucket is an error, not an absent object


def test_reading_a_missing_object_gives_none(s3_endpoint: str):
    bucket = _bucket(s3_endpoint, versioned=False)
    store = open_store(f"s3://{bucket}", endpoint_url=s3_endpoint, region="us-east-1")
    assert store.get(ObjectKey("nothing.json")) is None


def test_a_store_that_stops_answering_is_worth_a_retry(silent_endpoint: str):
    # a read timeout is botocore's HTTPClientError, not its ConnectionError: both are the connection failing
    client = boto3.client("s3", endpoint_url=silent_endpoint, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", config=short_timeouts())
    store = S3ReportStore("reports", "fleet", client)
    with pytest.raises(TransientStoreError, match=r"cannot read s3://reports/fleet/x\.json: Read timeout"):
        store.get(ObjectKey("x.json"))
