"""test_consent_privacy.py - what the customer allowed, and what they asked us to give back or
forget: consent per channel with its audit trail, CheckConsent for other services, export as
one JSON document, and erasure that leaves nothing personal behind."""

import json
import time

import pytest
from crm.v1 import common_pb2, contacts_pb2

EMAIL, SMS, POST, PHONE = (contacts_pb2.CHANNEL_EMAIL, contacts_pb2.CHANNEL_SMS,
                           contacts_pb2.CHANNEL_POST, contacts_pb2.CHANNEL_PHONE)
BRANCH_SRC, WEB, STAFF = (contacts_pb2.CONSENT_SOURCE_BRANCH, contacts_pb2.CONSENT_SOURCE_WEB,
                          contacts_pb2.CONSENT_SOURCE_STAFF)
UNKNOWN_ID = "00000000-0000-4000-8000-0000000c0de5"


class Person:
    """A contact created with every kind of personal data, and that data as strings."""

    def __init__(self, api, fresh, with_email=True):
        self.mobile = fresh.mobile()
        self.email = fresh.email("Swetlana.Kowalczyk") if with_email else ""
        self.family_name = fresh.name("Kowalczyk")
        contact = contacts_pb2.Contact(
            given_name="Swetlana",
            middle_name="Jurjewna",
            family_name=self.family_name,
            preferred_address="Frau Kowalczyk",
            phones=[contacts_pb2.Phone(number=self.mobile.national, label="mobile")],
            emails=[contacts_pb2.Email(address=self.email)] if with_email else [],
            birthday=common_pb2.Date(year=1979, month=7, day=14),
            addresses=[contacts_pb2.PostalAddress(street="Kastanienallee 77", city="Potsdam",
                                                  postal_code="14471", country="DE")],
            company="Kowalczyk Feinkost",
            job_title="Inhaberin",
            family=[contacts_pb2.FamilyMember(name="Bogumił", relation="husband")],
            preferences=["Marzipanliebhaberin"],
            favourite_products=["Rumkugeln"],
            tags=["erasable"],
            attributes={"customer_card": "KC-4711-0815"},
        )
        self.contact = api.must(api.create(contact)).contact
        self.id = self.contact.id
        self.notes = []

    def note(self, api, text):
        self.notes.append(text)
        return api.must(api.add_note(self.id, text))

    def personal(self):
        """Every personal string given about the person; none may outlive the erasure."""
        c = self.contact
        found = [c.given_name, c.middle_name, self.family_name, c.preferred_address,
                 self.mobile.e164, self.mobile.digits, "Kastanienallee", "Potsdam", c.company,
                 c.job_title, "Bogumił", "Marzipanliebhaberin", "Rumkugeln", "KC-4711-0815"]
        if self.email:
            found += [self.email, self.email.lower()]
        return found + self.notes


def leaked(text, person):
    """The personal strings of person that occur in text (case-insensitively)."""
    folded = text.lower()
    return [s for s in person.personal() if s and s.lower() in folded]


def all_audit(api, contact_id, page_size):
    entries, sizes, token = [], [], ""
    for _ in range(20):
        response = api.must(api.list_audit(contact_id, page_size=page_size, page_token=token))
        entries += list(response.entries)
        sizes.append(len(response.entries))
        token = response.page.next_page_token
        if not token:
            return entries, sizes
    raise AssertionError("paging does not end: %r" % sizes)


# --- consent --------------------------------------------------------------------------------


def test_set_consent_records_source_wording_and_who(api, fresh, branch):
    p = Person(api, fresh)
    before_ms = int(time.time() * 1000) - 5000
    k = api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form",
                                 "signed up in the shop")).consent
    assert (k.channel, k.granted, k.source, k.wording_version, k.recorded_by, k.branch) == (
        EMAIL, True, WEB, "2026-03", "web-form", branch)
    assert before_ms <= k.changed_unix_ms <= int(time.time() * 1000) + 5000
    check = api.must(api.check_consent(p.id, EMAIL))
    assert check.allowed and check.reason == ""
    assert check.contact_id == p.id
    assert check.consent == k


def test_check_consent_says_why_not(api, fresh):
    p = Person(api, fresh, with_email=False)
    check = api.must(api.check_consent(p.id, EMAIL))
    assert (check.allowed, check.reason) == (False, "no consent recorded")
    assert not check.HasField("consent")
    api.must(api.set_consent(p.id, SMS, False, STAFF, "2026-03", "staff-olga"))
    check = api.must(api.check_consent(p.id, SMS))
    assert (check.allowed, check.reason) == (False, "consent withdrawn")
    assert check.consent.granted is False
    api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form"))
    check = api.must(api.check_consent(p.id, EMAIL))
    assert (check.allowed, check.reason) == (False, "no email address")
    # Granted again after the withdrawal: the latest word counts
    api.must(api.set_consent(p.id, SMS, True, BRANCH_SRC, "2026-04", "till-3"))
    check = api.must(api.check_consent(p.id, SMS))
    assert (check.allowed, check.reason) == (True, "")
    assert (check.consent.source, check.consent.wording_version) == (BRANCH_SRC, "2026-04")
    # Phone calls and post: a number, an address
    api.must(api.set_consent(p.id, PHONE, True, STAFF, "2026-03", "staff-olga"))
    assert api.must(api.check_consent(p.id, PHONE)).allowed
    api.must(api.set_consent(p.id, POST, True, STAFF, "2026-03", "staff-olga"))
    assert api.must(api.check_consent(p.id, POST)).allowed


def test_check_consent_of_an_erased_contact(api, fresh):
    p = Person(api, fresh)
    api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form"))
    api.must(api.erase(p.id, "dpo", "asked to be forgotten"))
    check = api.must(api.check_consent(p.id, EMAIL))
    assert (check.allowed, check.reason) == (False, "contact erased")
    assert check.contact_id == p.id


def test_bad_consent_requests_refused_and_nothing_recorded(api, fresh):
    p = Person(api, fresh)
    bad = [
        dict(channel=contacts_pb2.CHANNEL_UNSPECIFIED),
        dict(channel=9),  # a channel number this service does not know
        dict(source=contacts_pb2.CONSENT_SOURCE_UNSPECIFIED),
        dict(source=9),
        dict(recorded_by=""),
        dict(wording_version="w" * 65),
        dict(recorded_by="r" * 201),
    ]
    for change in bad:
        fields = dict(channel=EMAIL, granted=True, source=WEB, wording_version="2026-03",
                      recorded_by="web-form", reason="")
        fields.update(change)
        reply = api.set_consent(p.id, **fields)
        assert reply.code == "INVALID_ARGUMENT", (change, reply)
    for channel in (contacts_pb2.CHANNEL_UNSPECIFIED, 9, -1):
        reply = api.check_consent(p.id, channel)
        assert reply.code == "INVALID_ARGUMENT", (channel, reply)
    check = api.must(api.check_consent(p.id, EMAIL))
    assert check.reason == "no consent recorded"
    assert list(api.must(api.get(p.id)).contact.consents) == []
    assert list(api.must(api.list_audit(p.id)).entries) == []


def test_consent_for_unknown_contact_is_not_found(api):
    assert api.set_consent(UNKNOWN_ID, EMAIL, True, WEB, "1", "x").code == "NOT_FOUND"
    assert api.check_consent(UNKNOWN_ID, EMAIL).code == "NOT_FOUND"


def test_audit_trail_of_consent_changes_oldest_first_in_pages(api, fresh, branch):
    p = Person(api, fresh)
    changes = [
        (EMAIL, True, WEB, "2026-01", "web-form", "newsletter sign-up"),
        (SMS, True, BRANCH_SRC, "2026-01", "till-2", "asked at the till"),
        (EMAIL, False, STAFF, "2026-01", "staff-olga", "phoned to unsubscribe"),
        (POST, True, STAFF, "2026-02", "staff-olga", "catalogue wanted"),
        (EMAIL, True, WEB, "2026-03", "web-form", "re-subscribed"),
    ]
    before_ms = int(time.time() * 1000) - 5000
    for channel, granted, source, wording, who, why in changes:
        api.must(api.set_consent(p.id, channel, granted, source, wording, who, why))
    entries, sizes = all_audit(api, p.id, 2)
    assert sizes == [2, 2, 1]
    assert [e.action for e in entries] == ["consent_changed"] * 5
    assert [(e.actor, e.reason) for e in entries] == [(c[4], c[5]) for c in changes]
    assert all(e.contact_id == p.id and e.branch == branch for e in entries)
    details = [json.loads(e.detail) for e in entries]
    for detail, (channel, granted, source, wording, _, _) in zip(details, changes):
        assert detail["channel"] in (channel, contacts_pb2.Channel.Name(channel)), detail
        assert detail["granted"] is granted, detail
    ids = [e.id for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == 5
    stamps = [e.at_unix_ms for e in entries]
    assert stamps == sorted(stamps) and stamps[0] >= before_ms
    again, _ = all_audit(api, p.id, 2)
    assert again == entries, "order not stable"
    for leak in (leaked(str(e), p) for e in entries):
        assert not leak, "personal data in the audit trail: %r" % leak
    reply = api.list_audit(p.id, page_size=2, page_token="not a token")
    assert reply.code == "INVALID_ARGUMENT", reply


def test_no_personal_data_in_any_audit_entry(api, fresh):
    p = Person(api, fresh)
    other = Person(api, fresh)
    p.note(api, "Prefers to be called after 18:00")
    api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form", "web sign-up"))
    api.must(api.set_consent(other.id, SMS, True, STAFF, "2026-03", "staff", "at the till"))
    api.must(api.export(p.id, "dpo", "subject access request"))
    api.must(api.merge(p.id, other.id, "staff-olga", "same person, two cards"))
    api.must(api.erase(p.id, "dpo", "asked to be forgotten"))
    entries, _ = all_audit(api, p.id, 100)
    actions = [e.action for e in entries]
    for action in ("consent_changed", "exported", "merged", "erased"):
        assert action in actions, actions
    # Nothing personal of either person, in any field of any entry
    for e in entries:
        assert not leaked(str(e), p), (e, leaked(str(e), p))
        assert not leaked(str(e), other), (e, leaked(str(e), other))


# --- export ---------------------------------------------------------------------------------


def test_export_is_one_document_with_everything_and_is_audited(api, fresh, branch):
    p = Person(api, fresh)
    p.note(api, "Asked for gluten-free Stollen")
    p.note(api, "Complained about the parking")
    api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form", "sign-up"))
    api.must(api.set_consent(p.id, EMAIL, False, STAFF, "2026-03", "staff-olga", "phoned"))
    api.must(api.set_consent(p.id, SMS, True, BRANCH_SRC, "2026-03", "till-1", "at the till"))
    before_ms = int(time.time() * 1000) - 5000
    document = api.must(api.export(p.id, "dpo-anna", "subject access request")).document
    doc = json.loads(document)
    assert isinstance(doc, dict)
    record = doc["contact"]
    assert record["id"] == p.id
    assert record["familyName"] == p.family_name
    assert [x["number"] for x in record["phones"]] == [p.mobile.e164]
    assert [x["address"] for x in record["emails"]] == [p.email]
    assert record["addresses"][0]["street"] == "Kastanienallee 77"
    assert record["family"][0]["name"] == "Bogumił"
    assert record["attributes"] == {"customer_card": "KC-4711-0815"}
    consents = {str(k["channel"]): k["granted"] for k in record["consents"]}
    assert consents in ({"1": False, "2": True}, {"CHANNEL_EMAIL": False, "CHANNEL_SMS": True})
    assert sorted(n["text"] for n in doc["notes"]) == sorted(p.notes)
    # The history of the consents is in the audit trail, and so is this export
    audit = doc["audit"]
    assert [a["action"] for a in audit].count("consent_changed") == 3
    entries = list(api.must(api.list_audit(p.id)).entries)
    exported = [e for e in entries if e.action == "exported"]
    assert len(exported) == 1, entries
    assert (exported[0].actor, exported[0].reason, exported[0].branch) == (
        "dpo-anna", "subject access request", branch)
    assert exported[0].at_unix_ms >= before_ms


def test_export_needs_an_actor(api, fresh):
    p = Person(api, fresh)
    reply = api.export(p.id, "", "why not")
    assert reply.code == "INVALID_ARGUMENT", reply
    assert [e.action for e in api.must(api.list_audit(p.id)).entries] == []


# --- erasure --------------------------------------------------------------------------------


def test_erase_needs_actor_and_reason(api, fresh):
    p = Person(api, fresh)
    for actor, reason in (("", "asked"), ("dpo", ""), ("", "")):
        reply = api.erase(p.id, actor, reason)
        assert reply.code == "INVALID_ARGUMENT", (actor, reason, reply)
    got = api.must(api.get(p.id)).contact
    assert got == p.contact


def test_erase_removes_the_personal_data_and_keeps_the_id(api, fresh, branch):
    p = Person(api, fresh)
    p.note(api, "Lives with her mother in Potsdam")
    api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form"))
    before_ms = int(time.time() * 1000) - 5000
    erased = api.must(api.erase(p.id, "dpo-anna", "art. 17 request"))
    assert erased.contact_id == p.id
    assert erased.erased_unix_ms >= before_ms
    c = api.must(api.get(p.id)).contact
    assert c.id == p.id
    assert c.erased_unix_ms == erased.erased_unix_ms
    assert (c.given_name, c.middle_name, c.family_name, c.preferred_address) == ("", "", "", "")
    assert list(c.phones) == [] and list(c.emails) == [] and list(c.addresses) == []
    assert list(c.family) == [] and list(c.preferences) == [] and list(c.favourite_products) == []
    assert list(c.tags) == [] and dict(c.attributes) == {} and list(c.consents) == []
    assert not c.HasField("birthday") and not c.HasField("company_founded")
    assert (c.company, c.job_title) == ("", "")
    assert c.version == p.contact.version + 1
    assert not leaked(str(c), p), leaked(str(c), p)
    assert list(api.must(api.list_notes(p.id)).notes) == []
    entries = list(api.must(api.list_audit(p.id)).entries)
    erasures = [e for e in entries if e.action == "erased"]
    assert [(e.actor, e.reason, e.branch) for e in erasures] == [
        ("dpo-anna", "art. 17 request", branch)]


def test_export_after_erase_holds_nothing_personal(api, fresh, maybe_pg):
    p = Person(api, fresh)
    p.note(api, "Mentioned her diagnosis: lactose intolerance")
    api.must(api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form", "sign-up"))
    before = api.must(api.export(p.id, "dpo", "subject access request")).document
    assert leaked(before, p), "the export before the erasure should hold the data"
    api.must(api.erase(p.id, "dpo", "asked to be forgotten"))
    document = api.must(api.export(p.id, "dpo", "proof of erasure")).document
    doc = json.loads(document)
    assert doc["contact"]["id"] == p.id
    assert doc["contact"].get("erasedUnixMs")
    assert doc.get("notes", []) == []
    assert not leaked(document, p), "left after the erasure: %r" % leaked(document, p)
    if maybe_pg is not None:
        # Behind the API as well: no table of the service holds what was only this
        # person's (other tests' people share the rest of the made-up data)
        own = [p.family_name, p.mobile.e164, p.email.lower()] + p.notes
        for table in ("contact", "contact_phone", "contact_email", "contact_note",
                      "contact_consent", "contact_audit", "crm_idempotency", "crm_outbox"):
            if maybe_pg.scalar("SELECT to_regclass ('contacts.%s') IS NULL" % table) == "t":
                continue
            rows = maybe_pg.query("SELECT t::text FROM contacts.%s t" % table)
            text = "\n".join(r[0] for r in rows).lower()
            assert not [s for s in own if s.lower() in text], (table, own)


def test_erased_phone_and_email_are_free_again(api, fresh):
    p = Person(api, fresh)
    api.must(api.erase(p.id, "dpo", "asked to be forgotten"))
    again = api.must(api.create(given_name="Newcomer",
                                phones=[contacts_pb2.Phone(number=p.mobile.international)],
                                emails=[contacts_pb2.Email(address=p.email.upper())]))
    assert again.created and again.contact.id != p.id
    assert [c.id for c in api.must(api.find(phone=p.mobile.e164)).contacts] == [again.contact.id]
    assert [c.id for c in api.must(api.find(email=p.email)).contacts] == [again.contact.id]


def test_erasing_twice_is_the_same_erasure(api, fresh):
    p = Person(api, fresh)
    first = api.must(api.erase(p.id, "dpo", "asked to be forgotten"))
    time.sleep(0.01)
    second = api.erase(p.id, "dpo-2", "asked again")
    assert second.code == "OK", second
    assert not second.replayed
    assert second.response == first
    erasures = [e for e in api.must(api.list_audit(p.id)).entries if e.action == "erased"]
    assert erasures and erasures[0].actor == "dpo", erasures


def test_resend_after_erase_no_longer_returns_the_data(api, fresh):
    mobile = fresh.mobile()
    family = fresh.name("Forgotten")
    create_id, note_id = fresh.request_id(), fresh.request_id()
    contact = contacts_pb2.Contact(given_name="Gertrud", family_name=family,
                                   phones=[contacts_pb2.Phone(number=mobile.national)])
    created = api.must(api.create(contact, meta=api.meta(request_id=create_id))).contact
    api.must(api.add_note(created.id, "Secret recipe", meta=api.meta(request_id=note_id)))
    api.must(api.erase(created.id, "dpo", "asked to be forgotten"))
    reply = api.create(contact, meta=api.meta(request_id=create_id))
    assert reply.code == "FAILED_PRECONDITION", reply
    assert "erased" in reply.message, reply
    assert family.encode() not in reply.raw and mobile.digits.encode() not in reply.raw
    reply = api.add_note(created.id, "Secret recipe", meta=api.meta(request_id=note_id))
    assert reply.code == "FAILED_PRECONDITION", reply
    assert b"Secret recipe" not in reply.raw
    # A new request about the erased contact is refused too
    reply = api.add_note(created.id, "Another note")
    assert reply.code == "FAILED_PRECONDITION", reply
    c = api.must(api.get(created.id)).contact
    c.given_name = "Back"
    reply = api.update(c)
    assert reply.code == "FAILED_PRECONDITION", reply
    reply = api.set_consent(created.id, EMAIL, True, WEB, "2026-03", "web-form")
    assert reply.code == "FAILED_PRECONDITION", reply
    assert api.must(api.get(created.id)).contact.given_name == ""


def test_erased_contact_is_found_no_more(api, fresh, branch):
    p = Person(api, fresh)
    assert [c.id for c in api.must(api.find(name=p.family_name)).contacts] == [p.id]
    api.must(api.erase(p.id, "dpo", "asked to be forgotten"))
    searches = [
        dict(name=p.family_name),
        dict(phone=p.mobile.e164),
        dict(email=p.email),
        dict(tag="erasable", branch=branch),
        dict(fuzzy_name="Swetlana " + p.family_name, branch=branch),
        dict(birthday_within_days=366, branch=branch),
    ]
    for criteria in searches:
        found = api.must(api.search(**criteria)).contacts
        assert p.id not in [c.id for c in found], criteria
    assert p.id not in [c.id for c in api.must(api.list(branch=branch)).contacts]
    assert p.id not in [d.contact.id for d in api.must(api.duplicates(p.id)).candidates]


@pytest.mark.parametrize("method", ["ExportContact", "EraseContact"])
def test_export_and_erase_resend_is_replayed(api, fresh, method):
    p = Person(api, fresh)
    meta = api.meta()
    if method == "ExportContact":
        send = lambda: api.export(p.id, "dpo", "subject access request", meta=meta)  # noqa: E731
    else:
        send = lambda: api.erase(p.id, "dpo", "asked", meta=meta)  # noqa: E731
    first, second = send(), send()
    assert first.code == second.code == "OK", (first, second)
    assert second.replayed and second.response == first.response
    actions = [e.action for e in api.must(api.list_audit(p.id)).entries]
    assert actions == ["exported" if method == "ExportContact" else "erased"], actions


def test_erasing_a_survivor_erases_what_the_merge_brought(api, fresh):
    """The merged record's data live on in the survivor: erasing the survivor forgets them,
    and a resend of a request about the merged id cannot bring them back."""
    survivor = Person(api, fresh)
    merged_mobile = fresh.mobile()
    merged_family = fresh.name("Zweitkarte")
    create_id = fresh.request_id()
    merged = api.must(api.create(
        given_name="Swetlana", family_name=merged_family,
        phones=[contacts_pb2.Phone(number=merged_mobile.national)],
        meta=api.meta(request_id=create_id))).contact
    api.must(api.merge(survivor.id, merged.id, "staff", "same person, two cards"))
    api.must(api.erase(merged.id, "dpo", "asked to be forgotten"))  # the merged id, followed
    c = api.must(api.get(survivor.id)).contact
    assert c.erased_unix_ms > 0 and list(c.phones) == []
    assert list(api.must(api.find(phone=merged_mobile.e164)).contacts) == []
    reply = api.create(given_name="Swetlana", family_name=merged_family,
                       phones=[contacts_pb2.Phone(number=merged_mobile.national)],
                       meta=api.meta(request_id=create_id))
    assert reply.code == "FAILED_PRECONDITION", reply
    assert merged_family.encode() not in reply.raw
    document = api.must(api.export(merged.id, "dpo", "proof of erasure")).document
    for personal in (merged_family, merged_mobile.e164, survivor.family_name):
        assert personal not in document, personal


def test_resent_consent_change_is_recorded_once(api, fresh):
    p = Person(api, fresh)
    meta = api.meta()
    first = api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form", "sign-up", meta=meta)
    second = api.set_consent(p.id, EMAIL, True, WEB, "2026-03", "web-form", "sign-up", meta=meta)
    assert first.code == second.code == "OK", (first, second)
    assert second.replayed and second.response == first.response
    entries = list(api.must(api.list_audit(p.id)).entries)
    assert [e.action for e in entries] == ["consent_changed"]
