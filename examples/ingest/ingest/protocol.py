"""The wire protocol: decide whether a request is acceptable, and spell the replies.

A request is UTF-8 JSON: one record (an object) or an array of up to 1000 of them, each with
a string ``"id"``. Each record is stored **as sent**: its own text, from its ``{`` to its
``}``, exactly as the client wrote it (whitespace, key order, number spelling, escapes and
duplicate keys included); only the whitespace around and between records is not part of any
record. Nothing is re-serialised, so what a client reads back is what it sent.

The records of an array are decoded one by one with ``JSONDecoder.raw_decode``, which says
where each one ends: that is how the exact text of each record is known without a second
parser, and it stops at the first bad record, so ``[0, 0, 0, ...]`` of a megabyte is refused
after one element instead of after decoding half a million numbers.

Refused although RFC 8259 allows them: integers of more than 4300 digits (Python's limit on
converting them) and nesting deeper than Python's recursion limit; an ``"id"`` that holds a
lone surrogate (``"\\ud800"``) or a NUL character (no database can store it as text), or
that a record names twice. ``NaN`` and ``Infinity`` are not JSON and are refused too.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_RECORDS = 1000
MAX_ID_LENGTH = 128

#: one record as the writer wants it: (id, the record's text as sent)
Row = tuple[str, str]
#: what a parsed record costs beyond its text: the tuple, the id and the text's object
#: headers (measured: 1.8 M records of 18 bytes held 380 MB more than none); counted in the
#: bytes in flight, so that max_inflight_bytes bounds memory for tiny records too
ROW_OVERHEAD_BYTES = 200

_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's four whitespace characters, nothing else


def _skip(text: str, position: int = 0) -> int:
    """Where the whitespace at ``position`` ends."""
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode_at = _DECODER.raw_decode
_PAIRS_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=list)


class BadRequest(ValueError):
    """The request can never succeed as sent; the message says what and where."""


def parse_request(payload: bytes | str) -> list[Row]:
    """Rows of one request, or :class:`BadRequest`. Nothing of a bad request is kept."""
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request is not UTF-8 text") from None
    try:
        return _parse(text)
    except BadRequest:
        raise
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request is nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        raise BadRequest(f"request cannot be read: {exc}") from None


def _parse(text: str) -> list[Row]:
    start = _skip(text)
    if not text.startswith("[", start):
        document, end = _decode_at(text, start)
        _expect_end(text, end)
        if type(document) is not dict:
            raise BadRequest(f"request must be a JSON object or array, not {_kind(document)}")
        return [_row(document, 0, text[start:end])]
    rows: list[Row] = []
    append = rows.append
    position = _skip(text, start + 1)
    if text.startswith("]", position):
        raise BadRequest("empty array: send at least one record")
    while True:
        if len(rows) == MAX_RECORDS:
            raise BadRequest(f"more than {MAX_RECORDS} records in one request; the limit is "
                             f"{MAX_RECORDS}")
        record, end = _decode_at(text, position)
        body = text[position:end]
        # the checks of _row for the usual record, inline: a call per record costs more
        record_id = record.get("id") if type(record) is dict else None
        if (type(record_id) is str and 0 < len(record_id) <= MAX_ID_LENGTH
                and record_id.isascii() and "\x00" not in record_id
                and body.count('"id"') == 1 and "\\u" not in body):
            append((record_id, body))
        else:
            append(_row(record, len(rows), body))
        separator = text[end:end + 1]
        if separator in _SPACE:  # whitespace, or the end of the text ("" is in any str)
            end = _skip(text, end)
            separator = text[end:end + 1]
        if separator == ",":
            position = end + 1
            if text[position:position + 1] in _SPACE:
                position = _skip(text, position)
        elif separator == "]":
            _expect_end(text, end + 1)
            return rows
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, end)


_SPACE = " \t\n\r"


def _expect_end(text: str, position: int) -> None:
    """Only whitespace may follow the request's document."""
    end = _skip(text, position)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)


def _row(record: Any, index: int, body: str) -> Row:
    if type(record) is not dict:
        raise BadRequest(f"record {index}: must be a JSON object, not {_kind(record)}")
    record_id = record.get("id")
    if type(record_id) is not str:
        if record_id is None and "id" not in record:
            raise BadRequest(f"record {index}: missing \"id\"")
        raise BadRequest(f"record {index}: \"id\" must be a string, not {_kind(record_id)}")
    length = len(record_id)
    if not 0 < length <= MAX_ID_LENGTH:
        if length == 0:
            raise BadRequest(f"record {index}: \"id\" is empty")
        raise BadRequest(f"record {index}: \"id\" has {length} characters; the limit is "
                         f"{MAX_ID_LENGTH}")
    if not record_id.isascii():
        _check_unicode_id(record_id, index)
    elif "\x00" in record_id:
        raise BadRequest(f"record {index}: \"id\" contains a NUL character")
    # a second "id" key (or one spelled with escapes, "\u0069d") would make the id depend on
    # which parser reads the stored text: find out, but only when the text could hold one
    if body.count('"id"') > 1 or "\\u" in body:
        keys = [key for key, _value in _PAIRS_DECODER.decode(body)]
        if keys.count("id") > 1:
            raise BadRequest(f"record {index}: \"id\" appears twice")
    return record_id, body


def _check_unicode_id(record_id: str, index: int) -> None:
    """Lone surrogates (legal in JSON escapes) cannot be stored as text by any database."""
    try:
        record_id.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"record {index}: \"id\" is not valid Unicode (lone surrogate)") from None
    if "\x00" in record_id:
        raise BadRequest(f"record {index}: \"id\" contains a NUL character")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


_ACK_CACHE: dict[tuple[int, int], bytes] = {}


def ack(stored: int, duplicates: int) -> bytes:
    """The success reply; cached, since almost every reply is one of a few shapes."""
    key = (stored, duplicates)
    reply = _ACK_CACHE.get(key)
    if reply is None:
        reply = json.dumps({"ok": True, "stored": stored, "duplicates": duplicates},
                           separators=(",", ":")).encode()
        if len(_ACK_CACHE) < 4096:
            _ACK_CACHE[key] = reply
    return reply


def error(message: str, retryable: bool) -> bytes:
    return json.dumps({"ok": False, "error": message, "retryable": retryable},
                      separators=(",", ":")).encode()


MULTIPART_ERROR = error("request must be exactly one frame after the envelope", False)
SHUTDOWN_ERROR = error("shutting down before this request was committed: it may or may not "
                       "be stored; resend it (a stored id is answered as a duplicate)", True)
BUSY_ERROR = error("busy: too many large requests waiting to be read; resend later", True)
