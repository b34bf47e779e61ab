"""The wire protocol: decide whether a request is acceptable, and spell the replies.

Everything here runs in the I/O thread for every request, so the happy path is kept to a
handful of C-level calls: one ``json.loads``, one type check and one length check per record,
and one ``json.dumps`` per record (the body is stored as compact JSON). Anything unusual
(non-ASCII ids, wrong types) takes the slower checks only when it has to.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from typing import Any

MAX_RECORDS = 1000
MAX_ID_LENGTH = 128

#: one record as the writer wants it: (id, compact JSON body)
Row = tuple[str, str]



def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The C scanner and encoder, built once: json.loads/json.dumps rebuild or wrap them in Python
# on every call, which costs more than the parsing itself for small records.
_scan = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
) if json.encoder.c_make_encoder is not None else None  # type: ignore[attr-defined]
_slow_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dumps(value: Any) -> str:
    """Compact JSON, ASCII only (escapes), so that no database can choke on the text."""
    if _encode is None:
        return _slow_dumps(value)
    return "".join(_encode(value, 0))


def _loads(payload: bytes) -> Any:
    text = payload.decode("utf-8")
    try:
        document, end = _scan(text, 0)
        if end == len(text):
            return document
    except (StopIteration, ValueError):
        pass
    # leading/trailing whitespace, or an error: the full decoder accepts the first and gives
    # a precise message for the second
    return _DECODER.decode(text)


class BadRequest(ValueError):
    """The request can never succeed as sent; the message says what and where."""


def parse_request(payload: bytes) -> list[Row]:
    """Rows of one request, or :class:`BadRequest`. Nothing of a bad request is kept."""
    try:
        document = _loads(payload)
    except UnicodeDecodeError:
        raise BadRequest("request is not UTF-8 text") from None
    except ValueError as exc:
        raise BadRequest(f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request is nested too deeply") from None
    if type(document) is dict:
        return [_row(document, 0)]
    if type(document) is list:
        count = len(document)
        if count == 0:
            raise BadRequest("empty array: send at least one record")
        if count > MAX_RECORDS:
            raise BadRequest(f"{count} records in one request; the limit is {MAX_RECORDS}")
        return [_row(record, index) for index, record in enumerate(document)]
    raise BadRequest(f"request must be a JSON object or array, not {_kind(document)}")


def _row(record: Any, index: int) -> Row:
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
    try:
        return record_id, _dumps(record)
    except RecursionError:
        raise BadRequest(f"record {index}: nested too deeply") from None
    except ValueError as exc:  # e.g. 1e999 parses as infinity, which JSON cannot express
        raise BadRequest(f"record {index}: {exc}") from None


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
        reply = _dumps({"ok": True, "stored": stored, "duplicates": duplicates}).encode()
        if len(_ACK_CACHE) < 4096:
            _ACK_CACHE[key] = reply
    return reply


def error(message: str, retryable: bool) -> bytes:
    return _dumps({"ok": False, "error": message, "retryable": retryable}).encode()


MULTIPART_ERROR = error("request must be exactly one frame", False)
