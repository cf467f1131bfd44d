"""The wire models read JSON as Go fills a struct (or a map), and write what vulnattest writes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vulnattest.attestations.dsse import Envelope
from vulnattest.gocompat import go_json
from vulnattest.wire import Descriptor, ManifestDocument, Statement, TokenAnswer, VulnPredicate


def test_a_struct_read_matches_keys_case_insensitively_and_the_last_duplicate_wins():
    statement = Statement.read(go_json(b'{"PredicateType": "a", "predicatetype": "b", "subject": '
                                       b'[{"DIGEST": {"sha256": "x", "sha256": "y", "SHA256": "z"}}]}'))
    assert statement.predicate_type == "b"
    # the digest is a map: exact keys, the last duplicate winning
    assert statement.names("y")
    assert not statement.names("x") and not statement.names("z")


def test_null_is_an_absent_field_and_unknown_fields_are_ignored():
    predicate = VulnPredicate.read({"metadata": None, "scanner": {"uri": None, "version": "1", "extra": 5}})
    assert predicate.scan_finished_on is None
    assert predicate.scanner is not None and (predicate.scanner.uri, predicate.scanner.version) == ("", "1")


def test_a_part_that_does_not_fit_is_absent_where_reading_goes_on_without_it():
    index = ManifestDocument.read_json(b'{"manifests": [{"digest": "sha256:1", "platform": "linux/amd64"}, "x", '
                                       b'{"digest": "sha256:2", "size": "12", "urls": ["u"]}], "layers": {"a": 1}}')
    assert index.manifests is not None
    assert [m.digest if m else None for m in index.manifests] == [None, None, "sha256:2"]
    assert index.manifests[2] is not None and index.manifests[2].size is None
    assert index.layers is None  # not a list: whoever reads layers says what that means
    with pytest.raises(ValidationError):
        ManifestDocument.read_json(b'["not", "an", "object"]')
    # a scanner named oddly still carries its report: the findings are what admission reads
    scanner = VulnPredicate.read({"scanner": {"uri": 5, "version": None, "result": {"Results": []}}}).scanner
    assert scanner is not None and (scanner.uri, scanner.version, scanner.result) == ("", "", {"Results": []})


def test_a_carried_descriptor_keeps_the_fields_vulnattest_does_not_read():
    read = Descriptor.read({"mediaType": "m", "digest": "sha256:1", "urls": ["https://x"], "data": "e30="})
    written = ManifestDocument(schema_version=2, layers=[read]).to_json()
    assert written == (b'{"schemaVersion":2,"layers":[{"mediaType":"m","digest":"sha256:1","urls":["https://x"],'
                       b'"data":"e30="}]}')


def test_a_wire_name_is_read_and_a_python_name_is_not():
    assert TokenAnswer.read_json(b'{"access_token": "t"}').bearer == "t"
    assert Statement.read({"predicate_type": "x"}).predicate_type is None


def test_an_envelope_is_written_as_cosign_writes_it():
    envelope = Envelope(b'{"a":1}', "application/vnd.in-toto+json", (b"\x01\x02",))
    assert envelope.to_json() == (b'{"payloadType":"application/vnd.in-toto+json","payload":"eyJhIjoxfQ==",'
                                  b'"signatures":[{"keyid":"","sig":"AQI="}]}')
    assert Envelope.from_json(envelope.to_json(), "here") == envelope
