"""Write bbolt (go.etcd.io/bbolt) database files from nested mappings, without Go.

The file follows bbolt's on-disk format version 2 (little-endian, 64-bit fields): pages 0 and 1 are meta
pages, page 2 is an empty freelist, and every bucket is a B+tree of leaf and branch pages after that.
The file is written once and never updated, so pages are packed full, and every bucket gets its own
root page: bbolt's inline buckets only save space, readers never require them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeAlias, TypeVar

PAGE_SIZE = 4096
MAGIC = 0xED0CDAED
FORMAT_VERSION = 2
MAX_KEY_SIZE = 32768

BucketContents: TypeAlias = Mapping[bytes, "bytes | BucketContents"]
"""A bucket's keys and values; a value that is itself a mapping is a nested bucket."""

_BRANCH_PAGE = 0x01
_LEAF_PAGE = 0x02
_META_PAGE = 0x04
_FREELIST_PAGE = 0x10
_BUCKET_LEAF_FLAG = 0x01
_FREELIST_PGID = 2
_FIRST_DATA_PGID = 3

_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, element count, overflow (extra pages)
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos (from the element to its key), key size, value size
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, key size, child page id
_BUCKET_HEADER = struct.Struct("<QQ")  # root page id, sequence
# magic, version, page size, flags, root bucket (root, sequence), freelist page, page count, txid
_META = struct.Struct("<IIIIQQQQQ")
_CHECKSUM = struct.Struct("<Q")

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3

_LeafElement: TypeAlias = tuple[bytes, bytes, int]  # key, value, flags
_BranchElement: TypeAlias = tuple[bytes, int]  # first key of the child, child page id
_T = TypeVar("_T")


def write_bbolt(path: Path, buckets: Mapping[bytes, BucketContents]) -> None:
    """Write a bbolt file at `path` holding `buckets`, each a mapping of keys to values or nested buckets."""
    pages = _Pages()
    root_elements: list[_LeafElement] = []
    for name in sorted(buckets):
        contents = buckets[name]
        if not isinstance(contents, Mapping):
            raise TypeError(f"top-level entry {name!r} must be a bucket: bbolt has no top-level values")
        root_elements.append(_bucket_element(pages, name, contents))
    root = _write_tree(pages, root_elements)
    meta = [_meta_page(txid, root, pages.next_pgid) for txid in (0, 1)]
    freelist = _PAGE_HEADER.pack(_FREELIST_PGID, _FREELIST_PAGE, 0, 0).ljust(PAGE_SIZE, b"\0")
    path.write_bytes(b"".join([*meta, freelist, *pages.chunks]))


class _Pages:
    """Allocates page ids in order and keeps each page's bytes, padded to whole pages."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.next_pgid = _FIRST_DATA_PGID

    def add(self, flags: int, count: int, body: bytes) -> int:
        pgid = self.next_pgid
        npages = -(-(_PAGE_HEADER.size + len(body)) // PAGE_SIZE)
        page = _PAGE_HEADER.pack(pgid, flags, count, npages - 1) + body
        self.chunks.append(page.ljust(npages * PAGE_SIZE, b"\0"))
        self.next_pgid += npages
        return pgid


def _bucket_element(pages: _Pages, name: bytes, contents: BucketContents) -> _LeafElement:
    _check_key(name)
    elements: list[_LeafElement] = []
    for key in sorted(contents):
        value = contents[key]
        if isinstance(value, Mapping):
            elements.append(_bucket_element(pages, key, value))
        elif isinstance(value, bytes):
            _check_key(key)
            elements.append((key, value, 0))
        else:
            kind = type(value).__name__
            raise TypeError(f"value of {key!r} in bucket {name!r} must be bytes or a mapping, not {kind}")
    root = _write_tree(pages, elements)
    return name, _BUCKET_HEADER.pack(root, 0), _BUCKET_LEAF_FLAG


def _check_key(key: bytes) -> None:
    if not 0 < len(key) <= MAX_KEY_SIZE:
        raise ValueError(f"bbolt keys must be 1 to {MAX_KEY_SIZE} bytes long, got {len(key)}: {key[:40]!r}")


def _write_tree(pages: _Pages, elements: Sequence[_LeafElement]) -> int:
    """Write leaf pages for `elements` (sorted) and branch levels above them; return the root page id."""
    level: list[_BranchElement] = []
    for group in _pack(elements, lambda e: _LEAF_ELEMENT.size + len(e[0]) + len(e[1])) or [[]]:
        first_key = group[0][0] if group else b""
        level.append((first_key, pages.add(_LEAF_PAGE, len(group), _leaf_body(group))))
    while len(level) > 1:
        groups = _pack(level, lambda e: _BRANCH_ELEMENT.size + len(e[0]))
        level = [(group[0][0], pages.add(_BRANCH_PAGE, len(group), _branch_body(group))) for group in groups]
    return level[0][1]


def _pack(items: Sequence[_T], size: Callable[[_T], int]) -> list[list[_T]]:
    """Split `items` into page-sized groups; like bbolt, a page holds at least two items (it may overflow)."""
    groups: list[list[_T]] = []
    used = PAGE_SIZE
    for item in items:
        item_size = size(item)
        if used + item_size > PAGE_SIZE and (not groups or len(groups[-1]) >= 2):
            groups.append([])
            used = _PAGE_HEADER.size
        groups[-1].append(item)
        used += item_size
    return groups


def _leaf_body(elements: Sequence[_LeafElement]) -> bytes:
    payloads = [key + value for key, value, _ in elements]
    positions = _positions(_LEAF_ELEMENT.size, payloads)
    headers = [
        _LEAF_ELEMENT.pack(flags, pos, len(key), len(value))
        for (key, value, flags), pos in zip(elements, positions, strict=True)
    ]
    return b"".join(headers + payloads)


def _branch_body(elements: Sequence[_BranchElement]) -> bytes:
    payloads = [key for key, _ in elements]
    positions = _positions(_BRANCH_ELEMENT.size, payloads)
    headers = [_BRANCH_ELEMENT.pack(pos, len(key), pgid) for (key, pgid), pos in zip(elements, positions, strict=True)]
    return b"".join(headers + payloads)


def _positions(element_size: int, payloads: Sequence[bytes]) -> list[int]:
    """Offsets of each payload counted from its own element header: headers come first, then all payloads."""
    positions = []
    offset = element_size * len(payloads)
    for index, payload in enumerate(payloads):
        positions.append(offset - index * element_size)
        offset += len(payload)
    return positions


def _meta_page(txid: int, root: int, page_count: int) -> bytes:
    fields = _META.pack(MAGIC, FORMAT_VERSION, PAGE_SIZE, 0, root, 0, _FREELIST_PGID, page_count, txid)
    page = _PAGE_HEADER.pack(txid, _META_PAGE, 0, 0) + fields + _CHECKSUM.pack(fnv64a(fields))
    return page.ljust(PAGE_SIZE, b"\0")


def fnv64a(data: bytes) -> int:
    """Return the 64-bit FNV-1a hash of `data`, the checksum bbolt keeps in each meta page."""
    value = _FNV64_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value
