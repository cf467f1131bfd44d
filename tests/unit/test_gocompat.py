"""Reading as Go reads: the vectors are the Go programs' own answers, recorded by running them (Go 1.26's
``time.Parse(time.RFC3339, s)`` then ``t.UTC()``, None where Go returns an error; cosign's statement reader)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from vulnattest.gocompat import b64decode_dsse, b64decode_std, cosign_statement, parse_time_rfc3339

GO_RFC3339 = [
    ('2026-11-28T00:00:01Z', '2026-11-28T00:00:01Z'),
    ('2026-11-28T00:00:01.123456789Z', '2026-11-28T00:00:01.123456Z'),
    ('2026-11-28T00:00:01,5Z', '2026-11-28T00:00:01.500000Z'),
    ('2026-11-28T1:00:01Z', '2026-11-28T01:00:01Z'),
    ('2026-11-28T01:00:01+05:30', '2026-11-27T19:30:01Z'),
    ('2026-11-28T01:00:01+25:00', None),
    ('2026-11-28T01:00:01+05:99', None),
    ('2026-11-28t01:00:01Z', None),
    ('2026-11-28T01:00:01z', None),
    ('2026-11-28 01:00:01Z', None),
    ('2026-11-28T01:00:01', None),
    ('2026-11-28T01:00:01+0530', None),
    ('2026-11-28T01:00Z', None),
    ('2026-02-29T01:00:01Z', None),
    ('2024-02-29T01:00:01Z', '2024-02-29T01:00:01Z'),
    ('2026-11-28T24:00:00Z', None),
    ('2026-11-28T23:59:60Z', None),
    ('0000-01-01T00:00:00Z', '0000-01-01T00:00:00Z'),
    ('2026-11-28T01:00:01.Z', None),
    (' 2026-11-28T01:00:01Z', None),
    ('2026-13-28T01:00:01Z', None),
    ('2026-11-28T01:00:01-00:00', '2026-11-28T01:00:01Z'),
    ('9999-12-31T23:59:59-23:00', '10000-01-01T22:59:59Z'),
    ('2026-11-28T01:00:01.5+01:00', '2026-11-28T00:00:01.500000Z'),
]


@pytest.mark.parametrize(("text", "expected"), GO_RFC3339)
def test_scan_times_are_read_as_gos_time_parse_reads_them(text: str, expected: str | None):
    if expected is None:
        with pytest.raises(ValueError, match="parsing time"):
            parse_time_rfc3339(text)
    elif expected.startswith(("0000-", "10000-")):  # outside Python's years: clamped, never "fresh"
        assert parse_time_rfc3339(text) in (datetime(1, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
    else:
        assert parse_time_rfc3339(text) == datetime.fromisoformat(expected.replace("Z", "+00:00"))


def test_base64_is_read_as_gos_standard_encoding_and_the_dsse_library_read_it():
    assert b64decode_std("aGVs\nbG8=\r\n") == b"hello"  # Go skips CR and LF anywhere
    for bad in ("aGVsbG8", "aGVs bG8=", "aGVsbG8=="):  # missing padding, a space, extra padding
        with pytest.raises(ValueError, match="illegal base64"):
            b64decode_std(bad)
    assert b64decode_dsse("_-8=") == b"\xff\xef"  # the URL-safe alphabet, as the DSSE library falls back to it
    with pytest.raises(ValueError, match="illegal base64"):
        b64decode_dsse("%%%%")


# cosign's attestation.Statement.UnmarshalJSON (v3.1.3) on each statement: True where it reads it
COSIGN_STATEMENTS = [
    ('{"_type":"https://in-toto.io/Statement/v1","predicateType":"x",'
     '"subject":[{"name":"a","digest":{"sha256":"ab"}}],"predicate":{"a":1}}', True),
    ('{"_type":"https://in-toto.io/Statement/v1","PredicateType":"x","subject":[],"predicate":{}}', False),
    ('{"_type":"https://in-toto.io/Statement/v1","predicatetype":"x","subject":[],"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","predicateType":"y","predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","predicate_type":"y","predicate":{}}', False),
    ('{"_type":"t","type":"u","predicate":{}}', False),
    ('{"_type":"t","predicate_type":"x","predicate":{}}', True),
    ('{"_type":"t","predicateType":"x","predicate":"a string"}', True),
    ('{"_type":"t","predicateType":"x","subject":[null],"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","subject":[{"digest":{"sha256":1}}],"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","subject":[{"digest":{"sha256":"a","sha256":"b"}}],"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","predicate":{"a":{"b":1,"b":2}}}', False),
    ('{"_type":"t","predicateType":"x","predicate":{"a":[{"b":1,"b":2}]}}', False),
    ('{"_type":"t","predicateType":"x","predicate":{"a":1},"predicate":{"a":2}}', False),
    ('{"_type":"t","predicateType":"x","predicate":null}', True),
    ('{"_type":"t","predicateType":null,"subject":null,"predicate":{}}', True),
    ('{"_type":"t","predicateType":5,"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","subject":[{"name":"a","mediaType":"m","media_type":"n"}],'
     '"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","subject":[{"name":"a","downloadLocation":"m","annotations":{"k":"v"},'
     '"content":"YWI="}],"predicate":{}}', True),
    ('{"_type":"t","predicateType":"x","subject":[{"Name":"a"}],"predicate":{}}', False),
    ('{"_type":"t","predicateType":"x","subject":{"name":"a"},"predicate":{}}', False),
    ('[]', False),
    ('{"_type":"t","predicateType":"x","predicate":"s","extra":1}', True),
    ('{"_type":"t","predicateType":"x","predicate":{},"extra":1}', False),
    ('{"_type":"t","predicateType":"x","subject":[{"digest":null}],"predicate":{}}', True),
]


@pytest.mark.parametrize(("text", "reads"), COSIGN_STATEMENTS)
def test_statements_are_read_as_cosign_reads_them_to_check_their_subject(text: str, reads: bool):
    if reads:
        assert cosign_statement(text.encode()).field("_type") == json.loads(text)["_type"]
    else:
        with pytest.raises(ValueError, match=r"field|key|not"):
            cosign_statement(text.encode())
