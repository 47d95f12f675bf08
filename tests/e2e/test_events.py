"""test_events.py - the contacts service's event log as a consumer sees it: GetEvents from a
position, in order and without gaps, payloads typed by their topic and holding ids but never
personal data; and the same events live through the broker's XPUB."""

import os
import time

import pytest
import zmq
from crm.v1 import contacts_pb2

EVENTS_OUT = os.environ.get("CRM_E2E_EVENTS_OUT", "")
CREATED, UPDATED, MERGED, CONSENT, ERASED = (
    "contacts.ContactCreated", "contacts.ContactUpdated", "contacts.ContactMerged",
    "contacts.ConsentChanged", "contacts.ContactErased")


def payload_of(topic, payload):
    """The payload decoded as crm.v1.<EventName> of its topic; fails on unknown fields."""
    service, _, name = topic.partition(".")
    assert service == "contacts", topic
    cls = getattr(contacts_pb2, name, None)
    assert cls is not None, "no message crm.v1.%s for topic %s" % (name, topic)
    message = cls()
    message.ParseFromString(payload)
    known = cls()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    assert known.SerializeToString() == message.SerializeToString(), (
        "%s payload has fields crm.v1.%s does not know" % (topic, name))
    return message


def last_position(api):
    return api.must(api.get_events(after_position=0, limit=1)).last_position


def events_after(api, after, want_request_ids, timeout_s=5.0):
    """The events after position `after`, once every request id wanted has one (the
    sequencer positions committed events shortly after the commit)."""
    end = time.monotonic() + timeout_s
    while True:
        events, position = [], after
        while True:
            response = api.must(api.get_events(after_position=position, limit=1000))
            events += list(response.events)
            if len(response.events) < 1000:
                break
            position = response.events[-1].position
        seen = {e.request_id for e in events}
        if set(want_request_ids) <= seen or time.monotonic() >= end:
            return events
        time.sleep(0.05)


def assert_gapless(events, after):
    positions = [e.position for e in events]
    assert positions == list(range(after + 1, after + 1 + len(events))), positions


def test_changes_are_events_in_order(api, fresh, branch):
    start = last_position(api)
    m1, m2 = fresh.mobile(), fresh.mobile()
    address = fresh.email("Events.Person")
    family = fresh.name("Eventful")
    metas = [api.meta() for _ in range(6)]
    a = api.must(api.create(given_name="Evelina", family_name=family,
                            phones=[contacts_pb2.Phone(number=m1.national)],
                            emails=[contacts_pb2.Email(address=address)], meta=metas[0])).contact
    a.job_title = "Buyer"
    a = api.must(api.update(a, meta=metas[1])).contact
    b = api.must(api.create(given_name="Evelina", family_name=family,
                            phones=[contacts_pb2.Phone(number=m2.national)],
                            meta=metas[2])).contact
    api.must(api.set_consent(a.id, contacts_pb2.CHANNEL_EMAIL, True,
                             contacts_pb2.CONSENT_SOURCE_WEB, "2026-03", "web-form",
                             meta=metas[3]))
    api.must(api.merge(a.id, b.id, "staff", "same person", meta=metas[4]))
    erased = api.must(api.erase(a.id, "dpo", "asked to be forgotten", meta=metas[5]))
    request_ids = [m.request_id for m in metas]
    # What changed nothing is no event: a refusal, a stale update, a reused request id, a resend
    quiet = [api.meta() for _ in range(3)]
    pointer = contacts_pb2.Contact(id=b.id, version=1, given_name="Merged away")
    assert api.update(pointer, meta=quiet[0]).code == "FAILED_PRECONDITION"
    c = api.must(api.create(given_name="Quiet", meta=quiet[1])).contact
    c.version = 7
    assert api.update(c, meta=quiet[2]).code == "ABORTED"
    c.version = 1
    assert api.update(c, meta=metas[1]).code == "INVALID_ARGUMENT"  # request id already used
    replayed = api.create(given_name="Evelina", family_name=family,
                          phones=[contacts_pb2.Phone(number=m1.national)],
                          emails=[contacts_pb2.Email(address=address)], meta=metas[0])
    assert replayed.code == "FAILED_PRECONDITION", replayed  # erased since: told, not replayed

    events = events_after(api, start, request_ids + [quiet[1].request_id])
    assert_gapless(events, start)
    assert not {quiet[0].request_id, quiet[2].request_id} & {e.request_id for e in events}
    assert [e.topic for e in events if e.request_id == quiet[1].request_id] == [CREATED]
    ours = [e for e in events if e.request_id in request_ids]
    assert [(e.topic, e.request_id) for e in ours] == list(zip(
        [CREATED, UPDATED, CREATED, CONSENT, MERGED, ERASED], request_ids)), [
        (e.position, e.topic, e.request_id) for e in ours]
    decoded = [payload_of(e.topic, e.payload) for e in ours]
    assert decoded[0] == contacts_pb2.ContactCreated(contact_id=a.id, branch=branch)
    assert decoded[1] == contacts_pb2.ContactUpdated(contact_id=a.id, version=2)
    assert decoded[2] == contacts_pb2.ContactCreated(contact_id=b.id, branch=branch)
    assert decoded[3] == contacts_pb2.ConsentChanged(
        contact_id=a.id, channel=contacts_pb2.CHANNEL_EMAIL, granted=True)
    assert decoded[4] == contacts_pb2.ContactMerged(survivor_id=a.id, merged_id=b.id)
    assert decoded[5] == contacts_pb2.ContactErased(contact_id=a.id,
                                                    erased_unix_ms=erased.erased_unix_ms)
    now_ms = int(time.time() * 1000)
    for e in ours:
        assert now_ms - 60000 < e.created_unix_ms <= now_ms + 5000, e
        # Ids, never personal data: events need no rewrite when a customer is erased
        for personal in (family, "Evelina", m1.digits, m2.digits, address.lower(), "Buyer"):
            assert personal.lower().encode() not in e.payload.lower(), (e.topic, personal)


def test_log_from_the_beginning_is_gapless_and_typed(api, fresh):
    api.must(api.create(given_name="Logged", phones=[contacts_pb2.Phone(
        number=fresh.mobile().national)]))
    time.sleep(0.3)
    events, position = [], 0
    for _ in range(1000):
        response = api.must(api.get_events(after_position=position, limit=500))
        events += list(response.events)
        if not response.events:
            break
        position = response.events[-1].position
    assert events, "the log is empty"
    assert_gapless(events, 0)
    assert response.last_position == events[-1].position
    for e in events:
        assert e.topic in (CREATED, UPDATED, MERGED, CONSENT, ERASED), e.topic
        payload_of(e.topic, e.payload)


def test_after_the_last_position_there_is_nothing_new(api, fresh):
    api.must(api.create(given_name="Last", phones=[contacts_pb2.Phone(
        number=fresh.mobile().national)]))
    # Let the log settle: the last position stays put once every commit is positioned
    last = -1
    for _ in range(50):
        now = last_position(api)
        if now == last:
            break
        last = now
        time.sleep(0.1)
    response = api.must(api.get_events(after_position=last))
    assert list(response.events) == []
    assert response.last_position == last


def test_limit_caps_an_answer(api, fresh):
    for _ in range(3):
        api.must(api.create(given_name="Capped", phones=[contacts_pb2.Phone(
            number=fresh.mobile().national)]))
    end = time.monotonic() + 5
    while last_position(api) < 3 and time.monotonic() < end:
        time.sleep(0.05)
    response = api.must(api.get_events(after_position=0, limit=3))
    assert [e.position for e in response.events] == [1, 2, 3]
    assert response.last_position >= 3
    response = api.must(api.get_events(after_position=1, limit=2))
    assert [e.position for e in response.events] == [2, 3]
    default = api.must(api.get_events(after_position=0))
    assert 0 < len(default.events) <= 100
    capped = api.must(api.get_events(after_position=0, limit=1000000))
    assert 0 < len(capped.events) <= 1000
    assert_gapless(capped.events, 0)
    assert len(capped.events) == 1000 or capped.events[-1].position == capped.last_position


def test_bad_positions(api):
    reply = api.get_events(after_position=-1)
    assert reply.code == "INVALID_ARGUMENT", reply
    last = last_position(api)
    reply = api.get_events(after_position=last + 1000)
    assert reply.code == "OUT_OF_RANGE", reply
    assert reply.response.last_position >= last
    assert list(reply.response.events) == []


def position_of(frame):
    """The position frame of the live stream: decimal text (docs/events.md)."""
    assert frame.isdigit() and not frame.startswith(b"0"), "position frame %r" % frame
    return int(frame)


@pytest.mark.skipif(not EVENTS_OUT, reason="CRM_E2E_EVENTS_OUT is not set")
def test_live_stream_through_the_broker(api, fresh):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"contacts.")
    sub.connect(EVENTS_OUT)
    try:
        # Subscriptions travel to the publisher asynchronously: settle, and change again once
        # if the first change went out before the subscription arrived
        time.sleep(0.3)
        frames, created, meta = None, None, None
        for _ in range(2):
            meta = api.meta()
            created = api.must(api.create(given_name="Live", phones=[contacts_pb2.Phone(
                number=fresh.mobile().national)], meta=meta)).contact
            end = time.monotonic() + 2.0
            while frames is None and time.monotonic() < end:
                if not sub.poll(100, zmq.POLLIN):
                    continue
                got = sub.recv_multipart()
                if len(got) == 4 and got[3] == meta.request_id.encode():
                    frames = got
            if frames is not None:
                break
        assert frames is not None, "no live event for the change within 2 s, twice"
    finally:
        sub.close()
    topic, payload, position, _ = frames
    assert topic == CREATED.encode()
    assert payload_of(topic.decode(), payload) == contacts_pb2.ContactCreated(
        contact_id=created.id, branch=api.default_branch)
    logged = [e for e in events_after(api, position_of(position) - 1, [meta.request_id])
              if e.request_id == meta.request_id]
    assert [e.position for e in logged] == [position_of(position)]
    assert logged[0].payload == payload
