"""test_contacts.py - the contacts service as a client uses it: create, read, update, find,
list, duplicates, idempotent resends and the branch of the request."""

import re
import time

from crm.v1 import common_pb2, contacts_pb2

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RETURN_EXISTING = contacts_pb2.DUPLICATE_POLICY_RETURN_EXISTING


def phone(number, label="", primary=False):
    return contacts_pb2.Phone(number=number, label=label, primary=primary)


def email(address, label="", primary=False):
    return contacts_pb2.Email(address=address, label=label, primary=primary)


def test_create_assigns_id_version_and_e164(api, branch):
    before_ms = int(time.time() * 1000) - 5000
    meta = api.meta()
    reply = api.create(
        given_name="Anna",
        middle_name="Petrovna",
        family_name="Ivanova",
        preferred_address="Anna Petrovna",
        first_name_allowed=True,
        phones=[phone("0176 1234 5678", "mobile", True)],
        emails=[email("Anna.Ivanova@Example.org")],
        birthday=common_pb2.Date(year=1984, month=2, day=29),
        meta=meta,
    )
    response = api.must(reply)
    assert reply.request_id == meta.request_id
    assert not reply.replayed
    assert response.created
    c = response.contact
    assert UUID.match(c.id), c.id
    assert c.version == 1
    assert c.branch == branch
    assert (c.given_name, c.middle_name, c.family_name) == ("Anna", "Petrovna", "Ivanova")
    assert c.preferred_address == "Anna Petrovna" and c.first_name_allowed
    phones = [(p.number, p.label, p.primary) for p in c.phones]
    assert phones == [("+4917612345678", "mobile", True)]
    assert [e.address for e in c.emails] == ["Anna.Ivanova@Example.org"]
    assert (c.birthday.year, c.birthday.month, c.birthday.day) == (1984, 2, 29)
    assert c.created_unix_ms >= before_ms
    assert c.updated_unix_ms >= c.created_unix_ms


def test_phone_formats_normalised_to_e164(api, fresh):
    for form in ("national", "international", "double_zero"):
        m = fresh.mobile()
        reply = api.create(given_name="Format", phones=[phone(getattr(m, form))])
        c = api.must(reply).contact
        assert [p.number for p in c.phones] == [m.e164], (form, getattr(m, form))


def test_get_returns_what_was_created(api, fresh):
    m = fresh.mobile()
    created = api.must(api.create(given_name="Get", family_name="Me", phones=[phone(m.national)]))
    got = api.must(api.get(created.contact.id))
    assert got.contact == created.contact


def test_get_unknown_id_is_not_found(api):
    reply = api.get("00000000-0000-4000-8000-000000000000")
    assert reply.code == "NOT_FOUND", reply


def test_get_bad_id_is_invalid_argument(api):
    for bad in ("", "42", "not-a-uuid", "00000000-0000-4000-8000-00000000000g", "x" * 300):
        reply = api.get(bad)
        assert reply.code == "INVALID_ARGUMENT", (bad, reply)


def test_update_with_current_version(api, fresh):
    m, m2 = fresh.mobile(), fresh.mobile()
    c = api.must(api.create(given_name="Old", phones=[phone(m.national)])).contact
    c.given_name = "New"
    del c.phones[:]
    c.phones.append(phone(m2.international))
    updated = api.must(api.update(c)).contact
    assert updated.id == c.id
    assert updated.version == 2
    assert updated.given_name == "New"
    assert [p.number for p in updated.phones] == [m2.e164]
    assert updated.updated_unix_ms >= updated.created_unix_ms
    got = api.must(api.get(c.id)).contact
    assert got.version == 2 and got.given_name == "New"
    # The old number is free again, the new one found
    assert len(api.must(api.find(phone=m.e164)).contacts) == 0
    assert [x.id for x in api.must(api.find(phone=m2.e164)).contacts] == [c.id]


def test_update_with_stale_version_is_aborted(api, fresh):
    m = fresh.mobile()
    c = api.must(api.create(given_name="First", phones=[phone(m.national)])).contact
    stale = contacts_pb2.Contact()
    stale.CopyFrom(c)
    c.given_name = "Second"
    api.must(api.update(c))
    stale.given_name = "Third"
    reply = api.update(stale)
    assert reply.code == "ABORTED", reply
    got = api.must(api.get(c.id)).contact
    assert got.version == 2
    assert got.given_name == "Second"


def test_update_unknown_contact_is_not_found(api, fresh):
    c = contacts_pb2.Contact(
        id="00000000-0000-4000-8000-0000000000ff", version=1, given_name="Nobody"
    )
    reply = api.update(c)
    assert reply.code == "NOT_FOUND", reply


def test_update_without_version_is_invalid(api, fresh):
    c = api.must(api.create(given_name="Versionless", phones=[phone(fresh.mobile().national)]))
    c = c.contact
    c.version = 0
    reply = api.update(c)
    assert reply.code == "INVALID_ARGUMENT", reply
    assert api.must(api.get(c.id)).contact.version == 1


def test_find_by_phone_in_another_format(api, fresh):
    m = fresh.mobile()
    c = api.must(api.create(given_name="Phone", phones=[phone(m.national)])).contact
    for form in (m.e164, m.international, m.double_zero, m.national):
        found = api.must(api.find(phone=form)).contacts
        assert [x.id for x in found] == [c.id], form


def test_find_by_email_case_insensitively(api, fresh):
    address = fresh.email("Maria.Schmidt")
    c = api.must(api.create(given_name="Maria", emails=[email(address)])).contact
    for form in (address, address.lower(), address.upper()):
        found = api.must(api.find(email=form)).contacts
        assert [x.id for x in found] == [c.id], form
    # Stored as given
    assert found[0].emails[0].address == address


def test_find_by_name_prefix(api, fresh):
    family = fresh.name("Zorn")
    given = fresh.name("Quill")
    a = api.must(api.create(given_name="Ida", family_name=family)).contact
    b = api.must(api.create(given_name=given, family_name="Other")).contact
    c = api.must(api.create(given_name="Eva", family_name=family + "berg")).contact
    found = api.must(api.find(name=family[:-2].lower())).contacts
    assert sorted(x.id for x in found) == sorted([a.id, c.id])
    found = api.must(api.find(name=given.upper())).contacts
    assert [x.id for x in found] == [b.id]
    # Paging applies to finds as well
    first = api.must(api.find(name=family, page_size=1))
    assert len(first.contacts) == 1 and first.page.next_page_token
    second = api.must(api.find(name=family, page_size=1, page_token=first.page.next_page_token))
    assert len(second.contacts) == 1
    assert {first.contacts[0].id, second.contacts[0].id} == {a.id, c.id}


def test_find_needs_exactly_one_criterion(api, fresh):
    assert api.find().code == "INVALID_ARGUMENT"
    reply = api.find(phone=fresh.mobile().e164, email=fresh.email())
    assert reply.code == "INVALID_ARGUMENT", reply


def test_list_by_branch_with_paging(api, fresh, branch):
    ids = set()
    for i in range(7):
        c = api.must(api.create(given_name="Page%d" % i, phones=[phone(fresh.mobile().national)]))
        ids.add(c.contact.id)
    # Another branch's contact stays out
    api.must(api.create(given_name="Elsewhere", branch=fresh.branch()))

    def pages():
        seen, sizes, token = [], [], ""
        for _ in range(10):
            response = api.must(api.list(branch=branch, page_size=3, page_token=token))
            assert all(c.branch == branch for c in response.contacts)
            seen += [c.id for c in response.contacts]
            sizes.append(len(response.contacts))
            token = response.page.next_page_token
            if not token:
                return seen, sizes
        raise AssertionError("paging does not end: %r" % sizes)

    seen, sizes = pages()
    assert sizes == [3, 3, 1]
    assert len(seen) == len(set(seen)), "a contact listed twice"
    assert set(seen) == ids
    again, _ = pages()
    assert again == seen, "order not stable"
    # Page size 0 means the service default, which holds all seven
    whole = api.must(api.list(branch=branch))
    assert [c.id for c in whole.contacts] == seen
    assert whole.page.next_page_token == ""


def test_list_bad_page_token_is_invalid(api, branch):
    reply = api.list(branch=branch, page_size=3, page_token="not a token")
    assert reply.code == "INVALID_ARGUMENT", reply


def test_duplicate_phone_refused_with_existing_id(api, fresh):
    m = fresh.mobile()
    first = api.must(api.create(given_name="Original", phones=[phone(m.national)])).contact
    copy_name = fresh.name("Copy")
    reply = api.create(given_name=copy_name, phones=[phone(m.international)])
    assert reply.code == "ALREADY_EXISTS", reply
    assert reply.response.existing_id == first.id
    assert not reply.response.created
    assert len(api.must(api.find(name=copy_name)).contacts) == 0


def test_duplicate_email_any_case_refused(api, fresh):
    address = fresh.email("Dup")
    first = api.must(api.create(given_name="Mail", emails=[email(address)])).contact
    reply = api.create(given_name="Mail2", emails=[email(address.upper())])
    assert reply.code == "ALREADY_EXISTS", reply
    assert reply.response.existing_id == first.id


def test_duplicate_with_return_existing(api, fresh):
    m = fresh.mobile()
    first = api.must(api.create(given_name="Keep", phones=[phone(m.national)])).contact
    copy_name = fresh.name("Again")
    reply = api.create(
        contacts_pb2.Contact(given_name=copy_name, phones=[phone(m.double_zero)]),
        on_duplicate=RETURN_EXISTING,
    )
    response = api.must(reply)
    assert not response.created
    assert response.contact.id == first.id
    assert response.contact.given_name == "Keep"
    assert response.existing_id == first.id
    assert len(api.must(api.find(name=copy_name)).contacts) == 0


def test_concurrent_creates_with_one_phone_make_one_contact(new_client, branch, fresh, api):
    m = fresh.mobile()
    clients = [new_client() for _ in range(4)]
    for i, c in enumerate(clients):
        request = contacts_pb2.CreateContactRequest(
            contact=contacts_pb2.Contact(given_name="Racer%d" % i, phones=[phone(m.national)])
        )
        c.send_call("contacts", "CreateContact", request, c.meta(branch=branch))
    replies = []
    for c in clients:
        reply = c.recv_call(5000)
        assert reply is not None, "no reply"
        replies.append(api.decode(reply, "CreateContact"))
    codes = sorted(r.code for r in replies)
    assert codes == ["ALREADY_EXISTS"] * 3 + ["OK"], replies
    winner = [r for r in replies if r.code == "OK"][0].response.contact.id
    assert all(r.response.existing_id == winner for r in replies if r.code != "OK")


def test_resend_is_replayed_and_creates_nothing_twice(api, fresh):
    m = fresh.mobile()
    request_id = fresh.request_id()
    contact = contacts_pb2.Contact(given_name="Once", phones=[phone(m.national)])
    first = api.create(contact, meta=api.meta(request_id=request_id))
    assert first.code == "OK" and not first.replayed, first
    second = api.create(contact, meta=api.meta(request_id=request_id))
    assert second.code == "OK", second
    assert second.replayed
    assert second.request_id == request_id
    assert second.response == first.response
    assert len(api.must(api.find(phone=m.e164)).contacts) == 1


def test_resend_of_a_refusal_is_replayed(api, fresh):
    m = fresh.mobile()
    first = api.must(api.create(given_name="Holder", phones=[phone(m.national)])).contact
    request_id = fresh.request_id()
    contact = contacts_pb2.Contact(given_name="Late", phones=[phone(m.national)])
    a = api.create(contact, meta=api.meta(request_id=request_id))
    b = api.create(contact, meta=api.meta(request_id=request_id))
    assert a.code == b.code == "ALREADY_EXISTS", (a, b)
    assert b.replayed and b.response.existing_id == first.id


def test_same_request_id_with_another_payload_is_refused(api, fresh):
    m, other = fresh.mobile(), fresh.mobile()
    request_id = fresh.request_id()
    first = api.create(given_name="Mine", phones=[phone(m.national)], meta=api.meta(request_id))
    assert first.code == "OK", first
    reply = api.create(given_name="Mine", phones=[phone(other.national)], meta=api.meta(request_id))
    assert reply.code == "INVALID_ARGUMENT", reply
    assert len(api.must(api.find(phone=other.e164)).contacts) == 0
    # Nor may the id be spent on another method
    c = first.response.contact
    c.given_name = "Changed"
    reply = api.update(c, meta=api.meta(request_id))
    assert reply.code == "INVALID_ARGUMENT", reply
    assert api.must(api.get(c.id)).contact.given_name == "Mine"


def test_concurrent_resend_answered_alike(client, branch, fresh, api):
    m = fresh.mobile()
    meta = client.meta(branch=branch)
    request = contacts_pb2.CreateContactRequest(
        contact=contacts_pb2.Contact(given_name="Twice", phones=[phone(m.national)])
    )
    client.send_call("contacts", "CreateContact", request, meta)
    client.send_call("contacts", "CreateContact", request, meta)
    replies = []
    for _ in range(2):
        reply = client.recv_call(5000)
        assert reply is not None, "only %d of 2 replies" % len(replies)
        replies.append(api.decode(reply, "CreateContact"))
    assert [r.code for r in replies] == ["OK", "OK"], replies
    assert all(r.request_id == meta.request_id for r in replies)
    assert replies[0].response.contact == replies[1].response.contact
    assert sorted(r.replayed for r in replies) == [False, True], replies
    assert len(api.must(api.find(phone=m.e164)).contacts) == 1


def test_branch_defaults_to_the_request_branch(api, fresh, branch):
    c = api.must(api.create(given_name="Local", phones=[phone(fresh.mobile().national)])).contact
    assert c.branch == branch
    other = fresh.branch()
    d = api.must(api.create(given_name="Visitor", branch=other)).contact
    assert d.branch == other
    # ListContacts without a branch lists the request's branch
    listed = api.must(api.list()).contacts
    assert [x.id for x in listed] == [c.id]
    listed = api.must(api.list(meta=api.meta(branch=other))).contacts
    assert [x.id for x in listed] == [d.id]


def test_no_branch_anywhere_is_invalid(api):
    reply = api.create(given_name="Homeless", meta=api.meta(branch=""))
    assert reply.code == "INVALID_ARGUMENT", reply
    reply = api.list(meta=api.meta(branch=""))
    assert reply.code == "INVALID_ARGUMENT", reply


def test_caller_cannot_choose_the_id(api, fresh):
    forged = "00000000-0000-4000-8000-000000000001"
    reply = api.create(id=forged, given_name="Forged", phones=[phone(fresh.mobile().national)])
    if reply.code == "OK":
        assert reply.response.contact.id != forged
    else:
        assert reply.code == "INVALID_ARGUMENT", reply
    assert api.get(forged).code == "NOT_FOUND"
