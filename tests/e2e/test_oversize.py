"""test_oversize.py - frames at and over the suite's 1 MiB limit: ZeroMQ drops the sender's
connection, and the broker and the service go on answering everyone else. Kept apart and
run last, so that a failure here does not spread to the other tests."""

import time

from crm.v1 import contacts_pb2

MIB = 1024 * 1024


def create_of_size(size, fresh):
    """A CreateContactRequest whose encoding is exactly size bytes (its name is far too
    long, so the service refuses it if it ever gets it)."""
    contact = contacts_pb2.Contact(
        given_name="Big", phones=[contacts_pb2.Phone(number=fresh.mobile().national)]
    )
    request = contacts_pb2.CreateContactRequest(contact=contact)
    name = size - request.ByteSize()
    for _ in range(8):
        request.contact.family_name = "B" * name
        over = request.ByteSize() - size
        if over == 0:
            break
        name -= over
    return request


def test_large_frame_under_the_limit_is_answered(api, fresh):
    reply = api.call("CreateContact", create_of_size(MIB // 2, fresh))
    assert reply.code == "INVALID_ARGUMENT", reply


def test_frame_of_exactly_one_mebibyte_is_answered(api, fresh):
    request = create_of_size(MIB, fresh)
    assert len(request.SerializeToString()) == MIB
    reply = api.call("CreateContact", request)
    assert reply.code == "INVALID_ARGUMENT", reply


def oversize(new_client, make_api, api, fresh, size):
    big = new_client(timeout_ms=3000)
    big.send_call("contacts", "CreateContact", create_of_size(size, fresh), api.meta())
    reply = big.recv_call(3000)
    # Broker and service still answer a fresh client, at once
    problems = []
    if reply is not None:
        answered = api.decode(reply, "CreateContact")
        problems.append("the over-size request was answered: %s" % answered)
    started = time.monotonic()
    answer = new_client().mmi_service("contacts")
    if answer != "200":
        problems.append("mmi.service contacts answered %r afterwards" % answer)
    good = make_api().find(name="nobody-" + fresh.tag())
    if good.code != "OK":
        took = time.monotonic() - started
        problems.append("a good request afterwards got %s after %.1f s" % (good, took))
    assert not problems, "; ".join(problems)


def test_frame_of_two_mebibytes_drops_the_connection(new_client, make_api, api, fresh):
    oversize(new_client, make_api, api, fresh, 2 * MIB)


def test_frame_just_over_one_mebibyte_drops_the_connection(new_client, make_api, api, fresh):
    oversize(new_client, make_api, api, fresh, MIB + 200)
