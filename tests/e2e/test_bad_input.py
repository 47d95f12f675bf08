"""test_bad_input.py - what a careless or hostile client sends, and what it gets back: a clear
refusal, never a hang or a dead service. After each test a good request still gets a good
answer, from a connection of its own."""

import os
import time

import pytest
from crm.v1 import common_pb2, contacts_pb2

NO_WORKER_MS = int(os.environ.get("CRM_E2E_NO_WORKER_MS", "1000"))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, data):
    """A length-delimited protobuf field, written by hand."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_varint(number, value):
    return varint(number << 3 | 0) + varint(value)


def good_create(fresh, **fields):
    fields.setdefault("given_name", "Bad")
    fields.setdefault("phones", [contacts_pb2.Phone(number=fresh.mobile().national)])
    return contacts_pb2.CreateContactRequest(contact=contacts_pb2.Contact(**fields))


@pytest.fixture(autouse=True)
def service_survives(make_api):
    yield
    make_api().still_serving()


def test_garbage_payload(api):
    for garbage in (b"\xff" * 16, b"\x0a\xff\xff\xff\xff\x0f", b"\x07", b"\x0a\x05ab"):
        reply = api.call("CreateContact", garbage)
        assert reply.code == "INVALID_ARGUMENT", (garbage, reply)


def test_truncated_payload(api, fresh):
    data = good_create(fresh, family_name="Truncated" * 5).SerializeToString()
    for cut in (1, 5, len(data) // 2):
        reply = api.call("CreateContact", data[: len(data) - cut])
        assert reply.code == "INVALID_ARGUMENT", (cut, reply)


def test_garbage_request_meta(api, fresh):
    request = good_create(fresh)
    for garbage in (b"\x0a\x80", b"\xff" * 8, b"\x0a\x10short"):
        reply = api.call("CreateContact", request, meta=garbage)
        assert reply.code == "INVALID_ARGUMENT", (garbage, reply)


def test_invalid_utf8_in_request_meta(api, fresh):
    meta = field_bytes(1, b"id-\xc3\x28-bad") + field_bytes(2, api.default_branch.encode())
    reply = api.call("CreateContact", good_create(fresh), meta=meta)
    assert reply.code == "INVALID_ARGUMENT", reply


def test_wrong_frame_count(client, api, fresh):
    meta = api.meta()
    request = good_create(fresh)
    bodies = [
        [],
        ["CreateContact"],
        ["CreateContact", meta],
        ["CreateContact", meta, request, b"extra"],
    ]
    for body in bodies:
        frames = client.request("contacts", body, 5000)
        assert frames is not None, "no reply to a body of %d frames" % len(body)
        reply = api.decode(client.parse_reply(frames), "CreateContact")
        assert reply.code == "INVALID_ARGUMENT", (len(body), reply)


def test_unknown_method(api):
    for method in ("DeleteEverything", "createContact", "", b"CreateContact\x00", b"\xff\xfe"):
        reply = api.call(method, b"")
        assert reply.code == "UNIMPLEMENTED", (method, reply)


def test_unknown_service_is_unavailable_after_a_bounded_wait(client, api, fresh):
    started = time.monotonic()
    status, payload = client.call(
        "no-such-service", "CreateContact", good_create(fresh), api.meta(), timeout_ms=10000
    )
    elapsed = time.monotonic() - started
    assert api.decode((status, payload), "CreateContact").code == "UNAVAILABLE", status
    assert payload == b""
    assert elapsed < NO_WORKER_MS / 1000 + 3, "took %.1f s" % elapsed


def test_invalid_utf8_in_a_string_field(api):
    contact = field_bytes(3, b"An\xffna") + field_bytes(2, api.default_branch.encode())
    reply = api.call("CreateContact", field_bytes(1, contact))
    assert reply.code == "INVALID_ARGUMENT", reply
    # A truncated multi-byte sequence and an overlong encoding are not UTF-8 either
    for bad in (b"Caf\xc3", b"\xc0\xafetc", b"\xed\xa0\x80"):
        reply = api.call("FindContacts", field_bytes(3, bad))
        assert reply.code == "INVALID_ARGUMENT", (bad, reply)


def test_unknown_field_number(api, fresh):
    data = good_create(fresh).SerializeToString()
    reply = api.call("CreateContact", data + field_varint(99, 1))
    assert reply.code == "INVALID_ARGUMENT", reply
    # Inside the nested Contact as well
    contact = contacts_pb2.Contact(given_name="Nested").SerializeToString()
    reply = api.call("CreateContact", field_bytes(1, contact + field_bytes(77, b"x")))
    assert reply.code == "INVALID_ARGUMENT", reply


def test_empty_contact(api):
    reply = api.call("CreateContact", contacts_pb2.CreateContactRequest())
    assert reply.code == "INVALID_ARGUMENT", reply
    reply = api.create(contacts_pb2.Contact())
    assert reply.code == "INVALID_ARGUMENT", reply
    reply = api.create(contacts_pb2.Contact(branch="e2e-only-a-branch"))
    assert reply.code == "INVALID_ARGUMENT", reply


@pytest.mark.parametrize(
    "what",
    ["long-name", "100-phones", "feb-30", "email-without-at", "phone-of-letters", "short-phone"],
)
def test_absurd_values(api, fresh, what):
    m = fresh.mobile()
    contact = contacts_pb2.Contact(
        given_name="Absurd", phones=[contacts_pb2.Phone(number=m.national)]
    )
    if what == "long-name":
        contact.family_name = "N" * 10240
    elif what == "100-phones":
        base = int(m.digits)
        del contact.phones[:]
        contact.phones.extend(
            contacts_pb2.Phone(number="+4915%09d" % (base + i)) for i in range(100)
        )
    elif what == "feb-30":
        contact.birthday.CopyFrom(common_pb2.Date(year=2023, month=2, day=30))
    elif what == "email-without-at":
        contact.emails.add(address="nobody.example.org")
    elif what == "phone-of-letters":
        contact.phones.add(number="call me maybe")
    elif what == "short-phone":
        contact.phones.add(number="+49 1")
    reply = api.create(contact)
    assert reply.code == "INVALID_ARGUMENT", reply
    # Nothing of it was stored
    assert len(api.must(api.find(phone=m.e164)).contacts) == 0


def test_absurd_update_changes_nothing(api, fresh):
    phones = [contacts_pb2.Phone(number=fresh.mobile().national)]
    c = api.must(api.create(given_name="Sane", phones=phones)).contact
    c.birthday.CopyFrom(common_pb2.Date(year=2023, month=2, day=30))
    reply = api.update(c)
    assert reply.code == "INVALID_ARGUMENT", reply
    got = api.must(api.get(c.id)).contact
    assert got.version == 1 and not got.HasField("birthday")


def test_missing_request_id(api, fresh):
    reply = api.create(good_create(fresh).contact, meta=api.meta(request_id=""))
    assert reply.code == "INVALID_ARGUMENT", reply
    reply = api.get("00000000-0000-4000-8000-000000000000", meta=api.meta(request_id=""))
    assert reply.code == "INVALID_ARGUMENT", reply


def test_deadline_already_passed(api, fresh):
    m = fresh.mobile()
    request = good_create(fresh, phones=[contacts_pb2.Phone(number=m.national)])
    past = int(time.time() * 1000) - 60000
    reply = api.call("CreateContact", request, meta=api.meta(deadline_unix_ms=past))
    assert reply.code == "DEADLINE_EXCEEDED", reply
    assert len(api.must(api.find(phone=m.e164)).contacts) == 0
    # A deadline still ahead is served
    future = int(time.time() * 1000) + 60000
    reply = api.call("CreateContact", request, meta=api.meta(deadline_unix_ms=future))
    assert reply.code == "OK", reply
