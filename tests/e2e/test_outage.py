"""test_outage.py - the database goes away and comes back: requests are refused quickly with
UNAVAILABLE, a resend with the same request id then succeeds, and nothing is half-written."""

import time

import pytest
from crm.v1 import contacts_pb2


@pytest.fixture
def pg_outage(pg):
    """Stops PostgreSQL for the test; it is running again afterwards whatever happens."""
    pg.stop()
    try:
        yield pg
    finally:
        pg.start()


def test_database_down_then_up(api, pg, pg_outage, fresh, make_api):
    m = fresh.mobile()
    name = fresh.name("Outage")
    request_id = fresh.request_id()
    contact = contacts_pb2.Contact(
        given_name=name,
        phones=[contacts_pb2.Phone(number=m.national)],
        emails=[contacts_pb2.Email(address=fresh.email())],
    )

    # Down: a write and a read are refused at once, not left hanging
    for attempt in range(2):
        started = time.monotonic()
        reply = api.create(contact, meta=api.meta(request_id=request_id), timeout_ms=10000)
        elapsed = time.monotonic() - started
        assert reply.code == "UNAVAILABLE", reply
        assert reply.request_id == request_id
        assert elapsed < 3, "UNAVAILABLE took %.1f s" % elapsed
    started = time.monotonic()
    reply = api.find(phone=m.e164)
    assert reply.code == "UNAVAILABLE", reply
    assert time.monotonic() - started < 3

    # Up again: the same request, same id, goes through within a few seconds
    pg_outage.start()
    deadline = time.monotonic() + 10
    replies = []
    while True:
        reply = api.create(contact, meta=api.meta(request_id=request_id), timeout_ms=5000)
        replies.append(reply.code)
        if reply.code != "UNAVAILABLE" or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert reply.code == "OK", (reply, replies)
    created = reply.response.contact
    assert [p.number for p in created.phones] == [m.e164]

    # Exactly one contact, whole: its row, its phone and its email, and a stored reply
    found = api.must(api.find(phone=m.e164)).contacts
    assert [c.id for c in found] == [created.id]
    assert pg.scalar("SELECT count(*) FROM contacts.contact WHERE given_name = '%s'" % name) == "1"
    assert pg.scalar(
        "SELECT count(*) FROM contacts.contact_phone WHERE contact_id = '%s'" % created.id
    ) == "1"
    assert pg.scalar(
        "SELECT count(*) FROM contacts.contact_email WHERE contact_id = '%s'" % created.id
    ) == "1"
    assert pg.scalar(
        "SELECT count(*) FROM contacts.crm_idempotency"
        " WHERE request_id = '%s' AND reply IS NOT NULL" % request_id
    ) == "1"
    assert pg.scalar("SELECT count(*) FROM contacts.crm_idempotency WHERE reply IS NULL") == "0"
    # And the resend after that is a replay
    again = api.create(contact, meta=api.meta(request_id=request_id))
    assert again.code == "OK" and again.replayed, again
    assert again.response.contact.id == created.id
    make_api().still_serving()


def test_slow_database_answer_still_arrives(api, pg, fresh):
    """A request that waits three seconds on a row lock is answered when the lock goes, not
    given up by the broker while its worker is alive and well."""
    phones = [contacts_pb2.Phone(number=fresh.mobile().national)]
    c = api.must(api.create(given_name="Slow", phones=phones)).contact
    holder = pg.background(
        "SELECT 1 FROM contacts.contact WHERE id = '%s' FOR UPDATE; SELECT pg_sleep(3)" % c.id
    )
    try:
        for _ in range(50):
            if pg.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(3)%%'"
                " AND pid <> pg_backend_pid()"
            ) != "0":
                break
            time.sleep(0.1)
        c.given_name = "Patient"
        started = time.monotonic()
        reply = api.update(c, timeout_ms=10000)
        elapsed = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert reply.code == "OK", "%s after %.1f s" % (reply, elapsed)
    assert reply.response.contact.version == 2
    assert elapsed >= 2, "the lock was not held: %.1f s" % elapsed
