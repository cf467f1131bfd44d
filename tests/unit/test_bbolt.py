"""The bbolt writer's output, read back by a small reader that checks what bbolt itself checks."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vulnattest.demo.bbolt import PAGE_SIZE, BucketContents, fnv64a, write_bbolt

_LEAF, _BRANCH, _META, _FREELIST = 0x02, 0x01, 0x04, 0x10


@dataclass
class _Stats:
    """What the reader saw: pages by type, overflow pages, the deepest page below the root bucket."""

    pages: dict[int, int] = field(default_factory=dict)  # page flags -> page count
    overflow_pages: int = 0
    max_height: int = 0


def _read(path: Path) -> tuple[dict[bytes, Any], _Stats]:
    """Read a bbolt file into nested dicts, asserting the invariants bbolt relies on."""
    data = path.read_bytes()
    assert len(data) % PAGE_SIZE == 0
    stats = _Stats()
    metas = []
    for pgid in (0, 1):
        page = data[pgid * PAGE_SIZE : (pgid + 1) * PAGE_SIZE]
        page_id, flags, _, _ = struct.unpack_from("<QHHI", page)
        assert (page_id, flags) == (pgid, _META)
        fields = page[16:72]
        magic, version, page_size, _, root, _, freelist, high_water, txid = struct.unpack("<IIIIQQQQQ", fields)
        (checksum,) = struct.unpack_from("<Q", page, 72)
        assert (magic, version, page_size) == (0xED0CDAED, 2, PAGE_SIZE)
        assert checksum == fnv64a(fields)
        assert txid == pgid
        assert high_water * PAGE_SIZE == len(data)
        metas.append((root, freelist))
    assert metas[0] == metas[1]
    root, freelist = metas[0]
    assert struct.unpack_from("<QHHI", data, freelist * PAGE_SIZE) == (freelist, _FREELIST, 0, 0)

    def walk(pgid: int, height: int) -> list[tuple[bytes, Any]]:
        offset = pgid * PAGE_SIZE
        page_id, flags, count, overflow = struct.unpack_from("<QHHI", data, offset)
        assert page_id == pgid
        stats.pages[flags] = stats.pages.get(flags, 0) + 1
        stats.overflow_pages += overflow
        stats.max_height = max(stats.max_height, height)
        limit = offset + (overflow + 1) * PAGE_SIZE  # an element's bytes stay within its page and overflow
        items: list[tuple[bytes, Any]] = []
        for index in range(count):
            element = offset + 16 + 16 * index
            if flags == _BRANCH:
                pos, ksize, child = struct.unpack_from("<IIQ", data, element)
                assert element + pos + ksize <= limit
                key = data[element + pos : element + pos + ksize]
                children = walk(child, height + 1)
                assert children[0][0] == key, "a branch key is the first key of its child"
                items += children
            else:
                assert flags == _LEAF
                leaf_flags, pos, ksize, vsize = struct.unpack_from("<IIII", data, element)
                assert element + pos + ksize + vsize <= limit
                key = data[element + pos : element + pos + ksize]
                value = data[element + pos + ksize : element + pos + ksize + vsize]
                if leaf_flags & 1:
                    bucket_root, sequence = struct.unpack("<QQ", value)
                    assert sequence == 0
                    items.append((key, dict(walk(bucket_root, 1))))
                else:
                    items.append((key, value))
        return items

    items = walk(root, 1)
    keys = [key for key, _ in items]
    assert keys == sorted(keys)
    return dict(items), stats


def test_fnv64a_matches_reference_vectors() -> None:
    assert fnv64a(b"") == 0xCBF29CE484222325
    assert fnv64a(b"a") == 0xAF63DC4C8601EC8C
    assert fnv64a(b"foobar") == 0x85944171F73967E8


def test_nested_buckets_round_trip(tmp_path: Path) -> None:
    buckets: dict[bytes, BucketContents] = {
        b"vulnerability": {b"CVE-1": b"{}", b"CVE-0": b'{"Title":"x"}'},
        b"alpine 3.19": {b"zlib": {b"CVE-1": b"{}"}, b"busybox": {}},
        b"empty": {},
    }
    path = tmp_path / "db"
    write_bbolt(path, buckets)
    contents, _ = _read(path)
    assert contents == buckets
    assert list(contents) == [b"alpine 3.19", b"empty", b"vulnerability"]


def test_thousands_of_keys_split_into_leaves_under_branch_levels(tmp_path: Path) -> None:
    description = b"x" * 150  # about the size of a real vulnerability record
    bucket = {f"CVE-2099-{i:05}".encode(): b'{"Title":"%d","Description":"%s"}' % (i, description) for i in range(5000)}
    path = tmp_path / "db"
    write_bbolt(path, {b"vulnerability": bucket, b"small": {b"k": b"v"}})
    contents, stats = _read(path)
    assert contents[b"vulnerability"] == bucket
    assert stats.pages[_LEAF] > 200
    # Too many leaves for one branch page: a root branch over several branch pages over the leaves.
    assert stats.max_height == 3
    assert stats.pages[_BRANCH] >= 3


def test_large_values_span_overflow_pages(tmp_path: Path) -> None:
    big = bytes(range(256)) * 80  # 20 KiB
    path = tmp_path / "db"
    write_bbolt(path, {b"b": {b"a": b"small", b"big": big, b"c": big[:5000]}})
    contents, stats = _read(path)
    assert contents[b"b"] == {b"a": b"small", b"big": big, b"c": big[:5000]}
    assert stats.overflow_pages >= len(big) // PAGE_SIZE


def test_equal_input_gives_equal_bytes(tmp_path: Path) -> None:
    write_bbolt(tmp_path / "one", {b"b": {b"x": b"1", b"y": {b"z": b"2"}}})
    write_bbolt(tmp_path / "two", {b"b": {b"y": {b"z": b"2"}, b"x": b"1"}})
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_top_level_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be a bucket"):
        write_bbolt(tmp_path / "db", {b"key": b"value"})  # type: ignore[dict-item]


def test_empty_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 to 32768 bytes"):
        write_bbolt(tmp_path / "db", {b"bucket": {b"": b"value"}})
