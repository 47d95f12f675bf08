"""test_notes.py - notes on a contact: what the customer said, asked or complained of;
attributed, append-only, listed newest first in stable pages, and sent twice only once."""

import re
import time

import pytest
from crm.v1 import contacts_pb2

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UNKNOWN_ID = "00000000-0000-4000-8000-00000000beef"


@pytest.fixture
def contact(api, fresh):
    phones = [contacts_pb2.Phone(number=fresh.mobile().national)]
    return api.must(api.create(given_name="Noted", phones=phones)).contact


def all_notes(api, contact_id, page_size):
    """Every page of ListNotes; returns (notes in order, page sizes)."""
    notes, sizes, token = [], [], ""
    for _ in range(20):
        response = api.must(api.list_notes(contact_id, page_size=page_size, page_token=token))
        notes += list(response.notes)
        sizes.append(len(response.notes))
        token = response.page.next_page_token
        if not token:
            return notes, sizes
    raise AssertionError("paging does not end: %r" % sizes)


def test_add_note_is_attributed_and_timestamped(api, contact, branch):
    before_ms = int(time.time() * 1000) - 5000
    note = api.must(api.add_note(contact.id, "Asked about the winter catalogue", "staff-olga")).note
    assert UUID.match(note.id), note.id
    assert note.contact_id == contact.id
    assert note.text == "Asked about the winter catalogue"
    assert note.author == "staff-olga"
    assert note.branch == branch
    assert before_ms <= note.created_unix_ms <= int(time.time() * 1000) + 5000
    listed = api.must(api.list_notes(contact.id)).notes
    assert list(listed) == [note]


def test_note_text_kept_verbatim(api, contact):
    text = ("Complained:\n\t- late delivery (order 17)\n\t- «wrong colour» ✗\n\n"
            "Wants a call back.")
    note = api.must(api.add_note(contact.id, text)).note
    assert note.text == text
    assert api.must(api.list_notes(contact.id)).notes[0].text == text


@pytest.mark.parametrize("text, author, why", [
    ("", "staff", "text"),
    ("Hello", "", "author"),
    ("x" * 10001, "staff", "text"),
    ("ä" * 5001, "staff", "text"),  # 5001 characters, 10002 bytes: the limit is in bytes
    ("Hello", "s" * 201, "author"),
], ids=["no-text", "no-author", "10001-bytes", "5001-umlauts", "long-author"])
def test_bad_note_refused_and_nothing_stored(api, contact, text, author, why):
    reply = api.add_note(contact.id, text, author)
    assert reply.code == "INVALID_ARGUMENT", reply
    assert why in reply.message, reply
    assert list(api.must(api.list_notes(contact.id)).notes) == []


def test_note_of_exactly_the_limit_is_kept(api, contact):
    for text in ("n" * 10000, "ä" * 5000):
        note = api.must(api.add_note(contact.id, text)).note
        assert note.text == text
    assert len(api.must(api.list_notes(contact.id)).notes) == 2


def test_note_on_unknown_contact_is_not_found(api):
    reply = api.add_note(UNKNOWN_ID, "Hello")
    assert reply.code == "NOT_FOUND", reply
    reply = api.list_notes(UNKNOWN_ID)
    assert reply.code == "NOT_FOUND", reply


def test_notes_listed_newest_first_in_stable_pages(api, contact, fresh):
    added = []
    for i in range(7):
        added.append(api.must(api.add_note(contact.id, "note %d" % i)).note)
    # Another contact's notes stay out
    other = api.must(api.create(given_name="Other",
                                phones=[contacts_pb2.Phone(number=fresh.mobile().national)]))
    api.must(api.add_note(other.contact.id, "not yours"))

    notes, sizes = all_notes(api, contact.id, 3)
    assert sizes == [3, 3, 1]
    assert [n.text for n in notes] == ["note %d" % i for i in reversed(range(7))]
    assert [n.id for n in notes] == [n.id for n in reversed(added)]
    assert len({n.id for n in notes}) == 7, "a note listed twice"
    stamps = [n.created_unix_ms for n in notes]
    assert stamps == sorted(stamps, reverse=True)
    again, _ = all_notes(api, contact.id, 3)
    assert again == notes, "order not stable"
    # A note added while paging comes first next time and does not disturb the pages
    first = api.must(api.list_notes(contact.id, page_size=3))
    api.must(api.add_note(contact.id, "note 7"))
    second = api.must(api.list_notes(contact.id, page_size=3,
                                     page_token=first.page.next_page_token))
    assert [n.text for n in second.notes] == ["note 3", "note 2", "note 1"]
    whole = api.must(api.list_notes(contact.id))
    assert [n.text for n in whole.notes][:2] == ["note 7", "note 6"]
    assert len(whole.notes) == 8 and whole.page.next_page_token == ""


def test_list_notes_bad_page_token_is_invalid(api, contact):
    api.must(api.add_note(contact.id, "one"))
    # "o3" is the form of the offset tokens of ranked finds, never one of ListNotes
    for token in ("not a token", "o-1", "12345", "o3"):
        reply = api.list_notes(contact.id, page_size=1, page_token=token)
        assert reply.code == "INVALID_ARGUMENT", (token, reply)


def test_resent_note_is_added_once(api, contact, fresh):
    request_id = fresh.request_id()
    first = api.add_note(contact.id, "Said it once", meta=api.meta(request_id=request_id))
    second = api.add_note(contact.id, "Said it once", meta=api.meta(request_id=request_id))
    assert first.code == second.code == "OK", (first, second)
    assert not first.replayed and second.replayed
    assert second.response.note == first.response.note
    # The same request id with another text is another request: refused
    third = api.add_note(contact.id, "Said it twice", meta=api.meta(request_id=request_id))
    assert third.code == "INVALID_ARGUMENT", third
    assert [n.text for n in api.must(api.list_notes(contact.id)).notes] == ["Said it once"]


def test_notes_sent_at_once_are_all_kept(new_client, api, contact):
    clients = [new_client() for _ in range(3)]
    sent = []
    for i in range(12):
        c = clients[i % len(clients)]
        request = contacts_pb2.AddNoteRequest(contact_id=contact.id, text="burst %d" % i,
                                              author="staff")
        sent.append((c, c.send_call("contacts", "AddNote", request, c.meta(branch="e2e-b"))))
    for c, _ in sent:
        reply = c.recv_call(5000)
        assert reply is not None, "no reply"
        assert api.decode(reply, "AddNote").code == "OK", reply
    notes = api.must(api.list_notes(contact.id)).notes
    assert sorted(n.text for n in notes) == sorted("burst %d" % i for i in range(12))
    assert len({n.id for n in notes}) == 12
    stamps = [n.created_unix_ms for n in notes]
    assert stamps == sorted(stamps, reverse=True)


def test_long_notes_are_listed_and_exported_within_the_message_limit(api, fresh, new_client,
                                                                     make_api):
    """110 notes of 10000 bytes are 1.1 MB, more than one message may carry (1 MiB): a page
    must stop short of the limit and say where to go on, and an export must answer clearly.
    Neither may cost the service its connection, nor a bystander its answer."""
    contact = api.must(api.create(given_name="Talkative",
                                  phones=[contacts_pb2.Phone(number=fresh.mobile().national)]))
    contact_id = contact.contact.id
    writer = new_client()
    for i in range(110):
        request = contacts_pb2.AddNoteRequest(contact_id=contact_id, author="staff",
                                              text="%03d " % i + "n" * 9996)
        writer.send_call("contacts", "AddNote", request, writer.meta(branch=api.default_branch))
    for _ in range(110):
        reply = writer.recv_call(10000)
        assert reply is not None and api.decode(reply, "AddNote").code == "OK", reply

    bystander = new_client()
    bystander_meta = bystander.meta(branch=api.default_branch)
    bystander.send_call("contacts", "GetContact", contacts_pb2.GetContactRequest(id=contact_id),
                        bystander_meta)
    page = api.list_notes(contact_id, page_size=500)
    answer = bystander.recv_call(5000)
    assert answer is not None and api.decode(answer, "GetContact").code == "OK", (
        "a request in flight beside the large page was lost: %r" % (answer,))
    assert page.code == "OK", page
    assert len(page.raw) <= 1024 * 1024
    assert 0 < len(page.response.notes) < 110 and page.response.page.next_page_token
    texts = [n.text[:3] for n in page.response.notes]
    token = page.response.page.next_page_token
    while token:
        more = api.must(api.list_notes(contact_id, page_size=500, page_token=token))
        texts += [n.text[:3] for n in more.notes]
        token = more.page.next_page_token
    assert texts == ["%03d" % i for i in reversed(range(110))]

    export = make_api().export(contact_id, "dpo", "subject access request")
    assert export.code != "UNAVAILABLE", export
    if export.code == "OK":
        assert len(export.raw) <= 1024 * 1024
    else:
        assert export.code in ("RESOURCE_EXHAUSTED", "OUT_OF_RANGE", "FAILED_PRECONDITION"), export
    make_api().still_serving()
