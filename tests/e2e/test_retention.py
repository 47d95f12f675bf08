"""test_retention.py - request ids are remembered for the idempotency window, then forgotten by
the services' retention runs (every 2 s in this harness; the window is the default week)."""

import json

from crm.v1 import contacts_pb2


def _gone(pg, schema, request_id):
    return pg.scalar("SELECT count(*) FROM %s.crm_idempotency WHERE request_id = '%s'"
                     % (schema, request_id)) == "0"


def _age(pg, schema, request_id):
    pg.query("UPDATE %s.crm_idempotency SET created_at = now() - interval '8 days' "
             "WHERE request_id = '%s'" % (schema, request_id))


def test_a_resend_after_the_window_is_a_new_request(api, fresh, pg, logs):
    m = fresh.mobile()
    request_id = fresh.request_id()
    contact = contacts_pb2.Contact(given_name="Forgotten",
                                   phones=[contacts_pb2.Phone(number=m.national)])
    first = api.must(api.create(contact, meta=api.meta(request_id=request_id))).contact
    again = api.create(contact, meta=api.meta(request_id=request_id))
    assert again.code == "OK" and again.replayed, again

    _age(pg, "contacts", request_id)
    assert logs.wait_for(lambda: _gone(pg, "contacts", request_id), 10)
    # Now the same request is new: the phone is taken, by the contact it made the first time
    late = api.create(contact, meta=api.meta(request_id=request_id))
    assert late.code == "ALREADY_EXISTS" and not late.replayed, late
    assert late.response.existing_id == first.id
    # and this answer is remembered in its turn
    assert not _gone(pg, "contacts", request_id)

    def said():
        return [e for e in map(json.loads, logs.lines("contacts"))
                if e["msg"].startswith("retention:") and "request ids forgotten" in e["msg"]
                and not e["msg"].startswith("retention: 0 request ids")]

    assert logs.wait_for(said, 5), "contacts logged no retention run"


def test_request_ids_inside_the_window_stay(api, fresh, pg, logs):
    kept, gone = fresh.request_id(), fresh.request_id()
    api.must(api.create(given_name="Kept", meta=api.meta(request_id=kept)))
    api.must(api.create(given_name="Gone", meta=api.meta(request_id=gone)))
    pg.query("UPDATE contacts.crm_idempotency SET created_at = now() - interval '6 days' "
             "WHERE request_id = '%s'" % kept)
    _age(pg, "contacts", gone)
    assert logs.wait_for(lambda: _gone(pg, "contacts", gone), 10)
    assert not _gone(pg, "contacts", kept)
    again = api.create(given_name="Kept", meta=api.meta(request_id=kept))
    assert again.code == "OK" and again.replayed, again


def test_orders_forgets_too(pg, fresh, logs):
    request_id = fresh.request_id()
    pg.query("INSERT INTO orders.crm_idempotency (request_id, method, fingerprint, reply, "
             "created_at) VALUES ('%s', 'PlaceOrder', 'f', '{}', now() - interval '8 days')"
             % request_id)
    assert logs.wait_for(lambda: _gone(pg, "orders", request_id), 10)

    def said():
        return [e for e in map(json.loads, logs.lines("orders"))
                if e["msg"].startswith("retention:") and "request ids forgotten" in e["msg"]
                and not e["msg"].startswith("retention: 0 request ids")]

    assert logs.wait_for(said, 5), "orders logged no retention run"


def test_contacts_prunes_noted_name_words(pg, fresh, logs):
    # A word a rename gave up while others added words waits in contact_name_word_dropped for
    # the retention run, which drops it from the dictionary unless a contact holds it
    ghost = "ghost" + fresh.tag().lower()
    pg.query("INSERT INTO contacts.contact_name_word VALUES ('%s')" % ghost)
    pg.query("INSERT INTO contacts.contact_name_word_dropped VALUES ('%s')" % ghost)
    assert logs.wait_for(lambda: pg.scalar(
        "SELECT count(*) FROM contacts.contact_name_word_dropped WHERE word = '%s'" % ghost)
        == "0", 10)
    assert pg.scalar("SELECT count(*) FROM contacts.contact_name_word WHERE word = '%s'"
                     % ghost) == "0"

    def said():
        return [e for e in map(json.loads, logs.lines("contacts"))
                if e["msg"].startswith("retention:") and "name words checked" in e["msg"]
                and not e["msg"].endswith(" 0 name words checked")]

    assert logs.wait_for(said, 5), "contacts logged no prune"
