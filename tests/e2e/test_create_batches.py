"""test_create_batches.py - CreateContact requests that share a transaction are stored by one call
of contact_create_batch: the answers are those of storing them one by one, in order, duplicates
inside a batch and a contact committed elsewhere while a batch ran included."""

import random
import time
import uuid

from conftest import code_name
from crm.v1 import contacts_pb2
from test_record import rich_contact

RETURN_EXISTING = contacts_pb2.DUPLICATE_POLICY_RETURN_EXISTING


def phone(number):
    return contacts_pb2.Phone(number=number)


def send(client, branch, creates):
    """Sends every create at once; returns their request ids. The first goes to the
    database alone; the others arrive while its transaction runs and go together in the
    next one, as one batch. creates: (contact, on_duplicate, request_id or None)."""
    sent = []
    for contact, on_duplicate, request_id in creates:
        meta = client.meta(request_id=request_id, branch=branch)
        request = contacts_pb2.CreateContactRequest(contact=contact, on_duplicate=on_duplicate)
        client.send_call("contacts", "CreateContact", request, meta)
        sent.append(meta.request_id)
    return sent


def receive(client, sent):
    """The replies to the creates sent, in sending order: (Status, CreateContactResponse)."""
    replies = {}
    for _ in sent:
        reply = client.recv_call(10000)
        assert reply is not None, "only %d of %d replies" % (len(replies), len(sent))
        status, raw = reply
        answer = contacts_pb2.CreateContactResponse()
        answer.ParseFromString(raw)
        replies.setdefault(status.request_id, []).append((status, answer))
    return [replies[request_id].pop(0) for request_id in sent]


def burst(client, branch, creates):
    return receive(client, send(client, branch, creates))


def code(status):
    return code_name(status.code)


def test_duplicates_inside_one_batch_make_one_contact_each(client, branch, fresh, api, logs):
    shared_phone, shared_email = fresh.mobile(), fresh.email("Shared")
    creates = [
        (contacts_pb2.Contact(given_name="Opener", phones=[phone(fresh.mobile().national)]), 0,
         None),
        (contacts_pb2.Contact(given_name="First", phones=[phone(shared_phone.national)]), 0, None),
        (contacts_pb2.Contact(given_name="Second", phones=[phone(shared_phone.e164)]), 0, None),
        (contacts_pb2.Contact(given_name="Third", phones=[phone(shared_phone.national)]),
         RETURN_EXISTING, None),
        (contacts_pb2.Contact(given_name="Mail", emails=[contacts_pb2.Email(
            address=shared_email)]), 0, None),
        (contacts_pb2.Contact(given_name="Mail2", emails=[contacts_pb2.Email(
            address=shared_email.upper())]), 0, None),
        (contacts_pb2.Contact(given_name="Alone", phones=[phone(fresh.mobile().national)]), 0,
         None),
    ]
    before = len(logs.lines("contacts"))
    replies = burst(client, branch, creates)
    # Found before storing anything, not by the batch failing
    assert not any("writes failed" in line for line in logs.lines("contacts")[before:])
    codes = [code(status) for status, _ in replies]
    assert codes == ["OK", "OK", "ALREADY_EXISTS", "OK", "OK", "ALREADY_EXISTS", "OK"], replies
    first = replies[1][1].contact
    assert replies[1][1].created
    assert replies[2][1].existing_id == first.id
    # RETURN_EXISTING: the earlier contact of the batch, as stored
    assert not replies[3][1].created and replies[3][1].existing_id == first.id
    assert replies[3][1].contact == first
    assert replies[5][1].existing_id == replies[4][1].contact.id
    assert len(api.must(api.find(phone=shared_phone.e164)).contacts) == 1
    assert len(api.must(api.find(email=shared_email)).contacts) == 1


def test_resend_inside_one_batch_is_replayed(client, branch, fresh, api):
    m = fresh.mobile()
    request_id = fresh.request_id()
    twice = contacts_pb2.Contact(given_name="Twice", phones=[phone(m.national)])
    creates = [
        (contacts_pb2.Contact(given_name="Opener", phones=[phone(fresh.mobile().national)]), 0,
         None),
        (twice, 0, request_id),
        (twice, 0, request_id),
    ]
    replies = burst(client, branch, creates)
    assert [code(status) for status, _ in replies] == ["OK"] * 3, replies
    (a, first), (b, second) = replies[1], replies[2]
    assert not a.replayed and b.replayed
    assert first == second
    assert len(api.must(api.find(phone=m.e164)).contacts) == 1


def test_batched_reply_is_the_stored_record(client, branch, fresh, api):
    # The reply of a batched create is built from the request, not read back: it must
    # still be exactly what GetContact shows
    creates = [
        (contacts_pb2.Contact(given_name="Opener", phones=[phone(fresh.mobile().national)]), 0,
         None),
        (rich_contact(fresh, branch)[0], 0, None),
        (contacts_pb2.Contact(family_name=fresh.name("Bare")), 0, None),
    ]
    replies = burst(client, branch, creates)
    assert [code(status) for status, _ in replies] == ["OK"] * 3, replies
    for _, created in replies:
        assert created.created
        assert created.contact == api.must(api.get(created.contact.id)).contact


def wait_until(pg, sql, what):
    end = time.monotonic() + 10
    while pg.scalar(sql) != "1":
        assert time.monotonic() < end, what
        time.sleep(0.05)


class Holder:
    """A contact with a phone number created in a transaction of its own, as another
    instance would, that commits only when released: it then waits for an advisory lock
    that a second session holds until it is terminated. Names differ: two uncommitted
    contacts with a new name word in common wait for each other (the word dictionary)."""

    def __init__(self, pg, fresh, branch, number):
        self.pg = pg
        self.id = str(uuid.uuid4())
        self.key = random.randint(1, 2**31)
        self.gate = pg.background("SELECT pg_advisory_lock (%d); SELECT pg_sleep (60);"
                                  % self.key)
        wait_until(pg, "SELECT count (*) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND objid = %d AND granted" % self.key, "the gate did not close")
        self.process = pg.background(
            "BEGIN; SET search_path TO contacts; "
            "SELECT contact_create ('%s', 'e2e', '%s', '{\"branch\": \"%s\", "
            "\"givenName\": \"%s\", \"phones\": [{\"number\": \"%s\"}]}', "
            "false); SELECT pg_advisory_xact_lock_shared (%d); COMMIT;"
            % (fresh.request_id(), self.id, branch, fresh.name("Elsewhere"), number, self.key))
        wait_until(pg, "SELECT count (*) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND objid = %d AND NOT granted" % self.key, "the holder did not start")

    def blocking(self):
        """SQL counting the service's statements that wait for this holder."""
        return ("SELECT count (*) FROM pg_stat_activity a WHERE a.usename = 'contacts' AND "
                "(SELECT pid FROM pg_stat_activity WHERE query LIKE '%%%s%%' "
                "AND pid <> pg_backend_pid ()) = ANY (pg_blocking_pids (a.pid))" % self.id)

    def release(self):
        """Lets the holder commit, and waits until it did."""
        self.pg.scalar("SELECT count (pg_terminate_backend (pid)) FROM pg_stat_activity "
                       "WHERE query LIKE 'SELECT pg_advisory_lock (%d)%%'" % self.key)
        assert self.process.wait(30) == 0
        self.gate.wait(30)


def test_contact_committed_elsewhere_during_a_batch(client, branch, fresh, api, pg, logs):
    # Other instances' transactions hold two phones, uncommitted. The first create waits for
    # the first phone's holder; the others arrive meanwhile and then go as one batch, which
    # waits for the second phone's holder and fails when that one commits. Each create of
    # the batch is then stored again alone: the phone is the other one's, the rest is stored.
    # (When all four come in time for one transaction, that batch fails on the first phone,
    # and the creates retried alone meet the second holder one by one: the same answers.)
    first, taken = fresh.mobile(), fresh.mobile()
    holders = [Holder(pg, fresh, branch, first.e164), Holder(pg, fresh, branch, taken.e164)]
    try:
        before = len(logs.lines("contacts"))
        sent = send(client, branch, [
            (contacts_pb2.Contact(given_name="Opener", phones=[phone(first.national)]), 0, None),
            (contacts_pb2.Contact(given_name="Late", phones=[phone(taken.national)]), 0, None),
            (contacts_pb2.Contact(given_name="Bystander", phones=[phone(fresh.mobile().national)]),
             0, None),
            (contacts_pb2.Contact(given_name="Late2", phones=[phone(taken.national)]),
             RETURN_EXISTING, None),
        ])
        # The first create waits for the first holder (alone, or with the others when they
        # all came in time for one transaction)
        wait_until(pg, holders[0].blocking(), "the first create did not wait")
        time.sleep(0.3)
        holders[0].release()
        wait_until(pg, holders[1].blocking(), "the batch did not wait")
        holders[1].release()
        replies = receive(client, sent)
    finally:
        for holder in holders:
            if holder.process.poll() is None:
                holder.release()
    assert [code(status) for status, _ in replies] == [
        "ALREADY_EXISTS", "ALREADY_EXISTS", "OK", "OK"], replies
    assert replies[0][1].existing_id == holders[0].id
    assert replies[1][1].existing_id == holders[1].id
    assert replies[2][1].created
    assert not replies[3][1].created and replies[3][1].contact.id == holders[1].id
    assert [c.id for c in api.must(api.find(phone=taken.e164)).contacts] == [holders[1].id]
    assert any("writes failed" in line and "contact_phone_number" in line
               for line in logs.lines("contacts")[before:]), \
        "the batch did not meet the contact committed elsewhere"


def test_email_twice_in_a_case_only_the_database_folds(client, branch, fresh, api, logs):
    # "Ä" and "ä" are one letter to the unique index (lower() under a Unicode ctype) but not
    # to the service's own check: the database's answer is INVALID_ARGUMENT, not INTERNAL,
    # alone and inside a batch, and the batch's other creates are stored
    def twice():
        local = "ärzte." + fresh.tag()
        return contacts_pb2.Contact(given_name="Twice", emails=[
            contacts_pb2.Email(address=local.replace("ä", "Ä") + "@example.org"),
            contacts_pb2.Email(address=local + "@example.org")])

    alone = api.create(twice())
    assert alone.code == "INVALID_ARGUMENT" and "listed twice" in alone.message, alone
    before = len(logs.lines("contacts"))
    replies = burst(client, branch, [
        (contacts_pb2.Contact(given_name="Opener", phones=[phone(fresh.mobile().national)]), 0,
         None),
        (twice(), 0, None),
        (contacts_pb2.Contact(given_name="Fine", phones=[phone(fresh.mobile().national)]), 0,
         None),
    ])
    assert [code(status) for status, _ in replies] == ["OK", "INVALID_ARGUMENT", "OK"], replies
    assert "listed twice" in replies[1][0].message
    assert not any("writes failed" in line for line in logs.lines("contacts")[before:])
