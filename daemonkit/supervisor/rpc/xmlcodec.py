"""XML-RPC on the wire: a ``methodCall`` in, a ``methodResponse`` or fault out.

Why not ``xmlrpc.client``: it imports ``http.client``, which imports ``ssl``, which maps
OpenSSL into the supervisor (4-5 MB of resident memory, a quarter of the whole supervisor)
for a server that never speaks TLS. This is the same format (the XML-RPC spec, plus ``nil``
and ``i8`` as supervisord's clients may send them), parsed with expat, which the standard
library has anyway. A document type declaration is refused outright: no entity expansion.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from xml.parsers import expat

MAX_DEPTH = 64
MAXINT = 2**31 - 1
MININT = -(2**31)
_SCALARS = frozenset({"int", "i4", "i8", "boolean", "string", "double", "dateTime.iso8601",
                      "base64", "nil"})


class MalformedRequest(ValueError):
    """Not an XML-RPC methodCall this server can read."""


class _Frame:
    __slots__ = ("items", "kind", "name", "result", "typed")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: Any = [] if kind == "array" else ({} if kind == "struct" else None)
        self.name: str | None = None
        self.result: Any = None
        self.typed = False


class _Decoder:
    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.method: str | None = None
        self.params: list[Any] = []
        self.text: list[str] = []

    def start(self, tag: str, _attributes: dict[str, str]) -> None:
        self.text = []
        if tag in ("value", "array", "struct", "member"):
            if len(self.stack) >= MAX_DEPTH:
                raise MalformedRequest("nested too deeply")
            self.stack.append(_Frame(tag))
        elif tag in _SCALARS:
            self._value_frame().typed = True

    def end(self, tag: str) -> None:
        text, self.text = "".join(self.text), []
        if tag == "methodName":
            self.method = text.strip()
        elif tag == "name":
            if not self.stack or self.stack[-1].kind != "member":
                raise MalformedRequest("<name> outside a struct member")
            self.stack[-1].name = text
        elif tag in _SCALARS:
            self._value_frame().result = _scalar(tag, text)
        elif tag in ("array", "struct"):
            frame = self.stack.pop()
            self._value_frame().result = frame.items
        elif tag == "value":
            frame = self.stack.pop()
            self._deliver(frame.result if frame.typed else text)
        elif tag == "member":
            frame = self.stack.pop()
            if frame.name is None or not self.stack or self.stack[-1].kind != "struct":
                raise MalformedRequest("a struct member needs a name and a value")
            self.stack[-1].items[frame.name] = frame.result

    def _value_frame(self) -> _Frame:
        if not self.stack or self.stack[-1].kind != "value":
            raise MalformedRequest("a typed value outside <value>")
        frame = self.stack[-1]
        frame.typed = True
        return frame

    def _deliver(self, value: Any) -> None:
        if not self.stack:
            self.params.append(value)
        elif self.stack[-1].kind == "array":
            self.stack[-1].items.append(value)
        elif self.stack[-1].kind == "member":
            self.stack[-1].result = value
        else:
            raise MalformedRequest("a value where none belongs")

    def characters(self, data: str) -> None:
        self.text.append(data)


def _scalar(tag: str, text: str) -> Any:
    try:
        if tag in ("int", "i4", "i8"):
            return int(text.strip())
        if tag == "boolean":
            if text.strip() not in ("0", "1"):
                raise MalformedRequest(f"bad boolean {text!r}")
            return text.strip() == "1"
        if tag == "double":
            return float(text.strip())
        if tag == "base64":
            return base64.b64decode(text.encode("ascii")).decode("utf-8", "replace")
        if tag == "nil":
            return None
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedRequest(f"bad <{tag}>: {exc}") from None
    return text  # string, dateTime.iso8601


def loads(body: bytes) -> tuple[str, tuple[Any, ...]]:
    """(method, params) of a methodCall; MalformedRequest for anything else."""
    decoder = _Decoder()
    parser = expat.ParserCreate()

    def no_doctype(*_args: Any) -> None:
        raise MalformedRequest("document type declarations are not accepted")

    parser.StartDoctypeDeclHandler = no_doctype
    parser.EntityDeclHandler = no_doctype
    parser.StartElementHandler = decoder.start
    parser.EndElementHandler = decoder.end
    parser.CharacterDataHandler = decoder.characters
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise MalformedRequest(str(exc)) from None
    if not decoder.method:
        raise MalformedRequest("no methodName")
    return decoder.method, tuple(decoder.params)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _encode(value: Any, out: list[str], depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if isinstance(value, bool):
        out.append(f"<value><boolean>{int(value)}</boolean></value>")
    elif isinstance(value, int):
        if not MININT <= value <= MAXINT:
            raise OverflowError(f"{value} does not fit an XML-RPC int")
        out.append(f"<value><int>{value}</int></value>")
    elif isinstance(value, float):
        out.append(f"<value><double>{value!r}</double></value>")
    elif isinstance(value, str):
        out.append(f"<value><string>{_escape(value)}</string></value>")
    elif isinstance(value, bytes):
        out.append(f"<value><base64>{base64.b64encode(value).decode()}</base64></value>")
    elif isinstance(value, list | tuple):
        out.append("<value><array><data>")
        for item in value:
            _encode(item, out, depth + 1)
        out.append("</data></array></value>")
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for key, item in value.items():
            out.append(f"<member><name>{_escape(str(key))}</name>")
            _encode(item, out, depth + 1)
            out.append("</member>")
        out.append("</struct></value>")
    else:
        raise TypeError(f"cannot marshal {type(value).__name__}")


def dumps_response(value: Any) -> bytes:
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"]
    _encode(value, out)
    out.append("\n</param>\n</params>\n</methodResponse>\n")
    return "".join(out).encode("utf-8")


def dumps_fault(code: int, text: str) -> bytes:
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<fault>\n"]
    _encode({"faultCode": code, "faultString": text}, out)
    out.append("\n</fault>\n</methodResponse>\n")
    return "".join(out).encode("utf-8")
