"""Reading what admission reads the way its Go code reads it, where Python's own parsers would read it otherwise.

Kyverno and cosign are Go programs: a scan time Python's ``datetime.fromisoformat`` accepts may be one Go's
``time.Parse(time.RFC3339, …)`` refuses (then Kyverno's ``time_since`` fails and admission refuses the Pod), and the
other way round; base64 that Python refuses may be base64 Go reads. vulnattest's verdict must be admission's, so it
reads these values with Go's rules.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

# time.Parse(time.RFC3339, s) tries a strict fast path, then falls back to the general layout parser, whose rules
# for "2006-01-02T15:04:05Z07:00" are these (go/src/time/format.go, parse): a four-digit year, two-digit month and
# day, an hour of one or two digits ("15" is not zero-padded), two-digit minute and second, a fractional second
# after '.' or ',' that the layout does not name, then 'Z' or a sign and hh:mm (hh under 24, mm under 60).
_GO_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{1,2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:[.,](?P<fraction>\d+))?(?:(?P<utc>Z)|(?P<sign>[+-])(?P<tzh>\d{2}):(?P<tzm>\d{2}))",
    re.ASCII,
)
_GO_YEAR_ZERO = datetime(1, 1, 1, tzinfo=UTC)


def parse_time_rfc3339(text: object) -> datetime:
    """Parse `text` as Go's ``time.Parse(time.RFC3339, text)`` does, into an aware UTC datetime; raise ValueError
    where Go returns an error. A time before year 1 (Go allows year 0) comes back as year 1, 00:00 UTC."""
    if not isinstance(text, str):
        raise ValueError(f"not a string: {text!r}")
    match = _GO_RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"parsing time {text!r} as RFC 3339: not of the form 2006-01-02T15:04:05Z07:00")
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if not 1 <= month <= 12:
        raise ValueError(f"parsing time {text!r}: month out of range")
    if not 0 <= hour < 24:
        raise ValueError(f"parsing time {text!r}: hour out of range")
    if not 0 <= minute < 60:
        raise ValueError(f"parsing time {text!r}: minute out of range")
    if not 0 <= second < 60:
        raise ValueError(f"parsing time {text!r}: second out of range")
    if not 1 <= day <= (calendar.monthrange(year or 2000, month)[1] if year else _days_in_year_zero(month)):
        raise ValueError(f"parsing time {text!r}: day out of range")
    microsecond = int((match["fraction"] or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if match["sign"]:
        if int(match["tzh"]) >= 24 or int(match["tzm"]) >= 60:
            raise ValueError(f"parsing time {text!r}: time zone offset out of range")
        offset = timedelta(hours=int(match["tzh"]), minutes=int(match["tzm"]))
        offset = offset if match["sign"] == "+" else -offset
    if year == 0:
        return _GO_YEAR_ZERO
    local = datetime(year, month, day, hour, minute, second, microsecond)
    try:
        return (local - offset).replace(tzinfo=UTC)
    except OverflowError:
        return _GO_YEAR_ZERO if offset > timedelta(0) else datetime.max.replace(tzinfo=UTC)


def _days_in_year_zero(month: int) -> int:
    """Year 0 is a leap year in Go's proleptic Gregorian calendar."""
    return calendar.monthrange(2000, month)[1]


def b64decode_std(text: str) -> bytes:
    """Go's ``base64.StdEncoding.DecodeString``: the standard alphabet with padding, carriage returns and newlines
    ignored anywhere; anything else out of place is an error (ValueError)."""
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned, validate=True)
    except binascii.Error as e:
        raise ValueError(f"illegal base64 data: {e}") from None


def b64decode_dsse(text: str) -> bytes:
    """How the DSSE library cosign verifies envelopes with decodes a payload or signature: standard base64, else the
    URL-safe alphabet (go-securesystemslib ``dsse.b64Decode``); both as Go decodes them."""
    try:
        return b64decode_std(text)
    except ValueError:
        cleaned = text.replace("\r", "").replace("\n", "")
        try:
            return base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True) if (
                "+" not in cleaned and "/" not in cleaned) else b64decode_std(cleaned)
        except binascii.Error as e:
            raise ValueError(f"illegal base64 data: {e}") from None


class GoObject(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order, so it can be read as Go's ``encoding/json`` reads it into a
    struct: a field takes the value of the *last* key that names it, matched case-insensitively (Unicode folding:
    "PayloadType", "PAYLOADTYPE" and "payloadType" all name ``payloadType``)."""

    def field(self, name: str) -> Any:
        """The struct field `name` as Go fills it, or None when no key names it."""
        wanted = name.casefold()
        found = None
        for key, value in self:
            if key.casefold() == wanted:
                found = value
        return found

    def key(self, name: str) -> Any:
        """The map entry `name` as Go fills a ``map[string]…`` (exact key, the last duplicate wins), or None."""
        found = None
        for key, value in self:
            if key == name:
                found = value
        return found


def go_json(data: bytes | str) -> Any:
    """Decode JSON keeping every object's pairs (`GoObject`), so both struct and map reads can be made as Go makes
    them; raise ValueError where Go's decoder refuses it."""
    try:
        return json.loads(data, object_pairs_hook=GoObject)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None


def as_map(value: Any) -> Any:
    """A decoded value (`go_json`) as plain dicts and lists, as Go fills ``map[string]interface{}``: exact keys, the
    last duplicate wins."""
    if isinstance(value, GoObject):
        return {key: as_map(item) for key, item in value}
    if isinstance(value, list):
        return [as_map(item) for item in value]
    return value


# in-toto attestation v1 Statement and ResourceDescriptor as protojson names their fields (JSON name and proto
# name both accepted, each meaning one field)
_STATEMENT = {"_type": "type", "type": "type", "subject": "subject", "predicateType": "predicate_type",
              "predicate_type": "predicate_type", "predicate": "predicate"}
_DESCRIPTOR = {"name": "name", "uri": "uri", "digest": "digest", "content": "content",
               "downloadLocation": "download_location", "download_location": "download_location",
               "mediaType": "media_type", "media_type": "media_type", "annotations": "annotations"}


def cosign_statement(payload: bytes) -> GoObject:
    """The in-toto statement as cosign reads it to check its subject (``attestation.Statement.UnmarshalJSON``:
    protojson, which refuses unknown or duplicate fields and keys matched any other way than exactly; else, only
    for a statement whose predicate is a string, a plain map decode). Raise ValueError where cosign fails, which
    makes it drop the attestation as unverified."""
    statement = go_json(payload)
    if not isinstance(statement, GoObject):
        raise ValueError("the statement is not a JSON object")
    try:
        _protojson_message(statement, _STATEMENT, "statement")
    except ValueError:
        if isinstance(statement.key("predicate"), str):
            return statement
        raise
    return statement


def _protojson_message(value: Any, fields: dict[str, str], what: str) -> None:
    if not isinstance(value, GoObject):
        raise ValueError(f"{what} is not a JSON object")
    seen: set[str] = set()
    for key, item in value:
        name = fields.get(key)
        if name is None:
            raise ValueError(f"unknown field {key!r} in the {what}")
        if name in seen:
            raise ValueError(f"duplicate field {key!r} in the {what}")
        seen.add(name)
        if item is None:
            continue
        if name == "subject":
            if isinstance(item, GoObject) or not isinstance(item, list):
                raise ValueError("subject is not a list")
            for descriptor in item:
                _protojson_message(descriptor, _DESCRIPTOR, "subject")
        elif name == "digest":
            _protojson_struct(item, "digest")
            if any(not isinstance(v, str) for _, v in item):
                raise ValueError("a subject digest is not a string")
        elif name in ("predicate", "annotations"):
            _protojson_struct(item, name)
        elif not isinstance(item, str):
            raise ValueError(f"{key} is not a string")


def _protojson_struct(value: Any, what: str) -> None:
    """A ``google.protobuf.Struct`` (or a map): an object, no key twice at any depth."""
    if not isinstance(value, GoObject):
        raise ValueError(f"{what} is not a JSON object")
    keys = [key for key, _ in value]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key in the {what}")
    for _, item in value:
        _protojson_value(item, what)


def _protojson_value(value: Any, what: str) -> None:
    if isinstance(value, GoObject):
        _protojson_struct(value, what)
    elif isinstance(value, list):
        for item in value:
            _protojson_value(item, what)
