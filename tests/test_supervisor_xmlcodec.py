"""The XML-RPC codec of the supervisor's servers against the standard library's xmlrpc.

What any client sends (the standard library's ``xmlrpc.client`` is what supervisorctl uses)
must decode to the same values, what we send must decode in any client, and a hostile
document (entity expansion, deep nesting, garbage) is refused without effort.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest

from daemonkit.supervisor.rpc import xmlcodec

VALUES: list[Any] = [
    1, -2**31, 2**31 - 1, True, False, 1.5, "text <&> \u00e9", "", [], {}, [1, "a", [2, [3]]],
    {"name": "worker_00", "group": "pool", "nested": {"list": [True, 0.25]}},
]


@pytest.mark.parametrize("value", VALUES)
def test_what_clients_send_decodes_to_the_same_value(value: Any) -> None:
    body = xmlrpc.client.dumps((value, "second"), "supervisor.someMethod").encode()
    assert xmlcodec.loads(body) == ("supervisor.someMethod", (value, "second"))


@pytest.mark.parametrize("value", VALUES)
def test_what_we_answer_decodes_in_the_standard_client(value: Any) -> None:
    params, method = xmlrpc.client.loads(xmlcodec.dumps_response(value))
    assert (params, method) == ((value,), None)


def test_faults_and_other_forms() -> None:
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(xmlcodec.dumps_fault(10, "BAD_NAME: nope"))
    assert (fault.value.faultCode, fault.value.faultString) == (10, "BAD_NAME: nope")
    untyped = (b"<methodCall><methodName>a.b</methodName><params><param><value>bare"
               b"</value></param><param><value><i4>7</i4></value></param><param><value>"
               b"<base64>aGk=</base64></value></param><param><value><nil/></value></param>"
               b"</params></methodCall>")
    assert xmlcodec.loads(untyped) == ("a.b", ("bare", 7, "hi", None))
    no_params = b"<?xml version='1.0'?><methodCall><methodName>system.listMethods</methodName>"
    assert xmlcodec.loads(no_params + b"</methodCall>") == ("system.listMethods", ())
    with pytest.raises(OverflowError):
        xmlcodec.dumps_response(2**31)


@pytest.mark.parametrize("body", [
    b"", b"not xml", b"<methodCall><params/></methodCall>",
    b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<methodCall><methodName>&b;</methodName></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param>"
    + b"<value><array><data>" * 100 + b"</data></array></value>" * 100
    + b"</param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><boolean>2</boolean>"
    b"</value></param></params></methodCall>",
    b"<methodCall><methodName>x</methodName><params><param><value><struct><member>"
    b"<value><int>1</int></value></member></struct></value></param></params></methodCall>",
])
def test_malformed_or_hostile_documents_are_refused(body: bytes) -> None:
    with pytest.raises(xmlcodec.MalformedRequest):
        xmlcodec.loads(body)
