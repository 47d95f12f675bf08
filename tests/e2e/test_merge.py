"""test_merge.py - never the same person twice: likely duplicates with their reasons, and the
merge of two records that keeps every phone, email, note and consent, answers the old id
with the survivor, refuses what cannot be merged, and holds up under concurrent updates."""

import json
import random
import string

from crm.v1 import common_pb2, contacts_pb2

EMAIL, SMS, POST = contacts_pb2.CHANNEL_EMAIL, contacts_pb2.CHANNEL_SMS, contacts_pb2.CHANNEL_POST
WEB, STAFF = contacts_pb2.CONSENT_SOURCE_WEB, contacts_pb2.CONSENT_SOURCE_STAFF
UNKNOWN_ID = "00000000-0000-4000-8000-0000000d0d0d"


def surname():
    """A family name of random letters: unlike any other test's, so trigram similarity finds
    only this test's people."""
    return "".join(random.choice(string.ascii_lowercase) for _ in range(12)).capitalize()


def phone(number, label="", primary=False):
    return contacts_pb2.Phone(number=number, label=label, primary=primary)


def email(address, label="", primary=False):
    return contacts_pb2.Email(address=address, label=label, primary=primary)


def date(year, month, day):
    return common_pb2.Date(year=year, month=month, day=day)


def person(api, fresh, given, family_name=None, **fields):
    fields.setdefault("phones", [phone(fresh.mobile().national)])
    fields.setdefault("emails", [email(fresh.email(given))])
    contact = contacts_pb2.Contact(given_name=given, family_name=family_name or surname(),
                                   **fields)
    return api.must(api.create(contact)).contact


# --- duplicates -----------------------------------------------------------------------------


def test_find_duplicates_lists_a_similar_person_with_reasons(api, fresh):
    family = surname()
    anna = person(api, fresh, "Anna", family, birthday=date(1984, 2, 29), company="Amber SIA")
    twin = person(api, fresh, "Ana", family, birthday=date(1984, 2, 29))
    colleague = person(api, fresh, "Anna", family, birthday=date(1990, 1, 1), company="amber sia")
    # A birthday alone is no match
    person(api, fresh, "Boris", surname(), birthday=date(1984, 2, 29))
    candidates = api.must(api.duplicates(anna.id)).candidates
    by_id = {d.contact.id: d for d in candidates}
    assert set(by_id) == {twin.id, colleague.id}, [
        (d.contact.given_name, d.contact.family_name, list(d.reasons)) for d in candidates]
    assert sorted(by_id[twin.id].reasons) == ["same birthday", "similar name"]
    assert sorted(by_id[colleague.id].reasons) == ["same company", "similar name"]
    assert by_id[twin.id].contact == api.must(api.get(twin.id)).contact
    scores = [d.score for d in candidates]
    assert all(0 < s <= 1 for s in scores), scores
    assert scores == sorted(scores, reverse=True), "best candidate first"
    assert anna.id not in by_id
    # And the other way round
    assert anna.id in [d.contact.id for d in api.must(api.duplicates(twin.id)).candidates]
    limited = api.must(api.duplicates(anna.id, limit=1)).candidates
    assert len(limited) == 1


def test_same_address_only_when_an_address_is_shared(api, fresh):
    family = surname()
    home = contacts_pb2.PostalAddress(street="Elizabetes iela 10", city="Rīga", country="LV")
    homeless = person(api, fresh, "Anna", family)
    housed = person(api, fresh, "Anna", family, addresses=[home])
    neighbour = person(api, fresh, "Ana", family, addresses=[home])
    candidates = {d.contact.id: sorted(d.reasons)
                  for d in api.must(api.duplicates(homeless.id)).candidates}
    # The subject has no address: no candidate can share one with it
    assert candidates.get(housed.id) == ["similar name"], candidates
    assert candidates.get(neighbour.id) == ["similar name"], candidates
    candidates = {d.contact.id: sorted(d.reasons)
                  for d in api.must(api.duplicates(housed.id)).candidates}
    assert candidates.get(neighbour.id) == ["same address", "similar name"], candidates
    assert candidates.get(homeless.id) == ["similar name"], candidates


def test_merged_and_erased_contacts_are_never_duplicates(api, fresh):
    family = surname()
    anna = person(api, fresh, "Anna", family)
    listed = person(api, fresh, "Anna", family)
    merged = person(api, fresh, "Ana", family)
    erased = person(api, fresh, "Anja", family)
    survivor = person(api, fresh, "Zygmunt", surname())
    before = {d.contact.id for d in api.must(api.duplicates(anna.id)).candidates}
    assert before == {listed.id, merged.id, erased.id}
    api.must(api.merge(survivor.id, merged.id, "staff", "same customer"))
    api.must(api.erase(erased.id, "dpo", "asked to be forgotten"))
    after = {d.contact.id for d in api.must(api.duplicates(anna.id)).candidates}
    assert after == {listed.id}, after
    # The merged id is answered for its survivor, who is no duplicate of the Annas
    for_merged = api.must(api.duplicates(merged.id)).candidates
    assert anna.id not in [d.contact.id for d in for_merged]
    assert list(api.must(api.duplicates(erased.id)).candidates) == []


# --- merge ----------------------------------------------------------------------------------


def test_merge_keeps_every_phone_email_note_and_consent(api, fresh, branch):
    s = person(api, fresh, "Olga", surname(),
               phones=[phone(fresh.mobile().national, "mobile", True)], tags=["vip"])
    m_phones = [fresh.mobile(), fresh.mobile()]
    m = person(api, fresh, "Olga", s.family_name,
               phones=[phone(m_phones[0].national, "home", True), phone(m_phones[1].national)],
               emails=[email(fresh.email("olga.b")), email(fresh.email("olga.c"))],
               birthday=date(1971, 12, 24), tags=["wholesale", "vip"],
               family=[contacts_pb2.FamilyMember(name="Igor", relation="son")])
    api.must(api.add_note(s.id, "note on the survivor"))
    api.must(api.add_note(m.id, "first note on the merged"))
    api.must(api.add_note(m.id, "second note on the merged"))
    api.must(api.set_consent(s.id, EMAIL, True, WEB, "2026-03", "web-form", "sign-up"))
    api.must(api.set_consent(m.id, SMS, False, STAFF, "2026-03", "staff", "no texts"))
    api.must(api.set_consent(m.id, POST, True, STAFF, "2026-03", "staff", "catalogue"))

    merged = api.must(api.merge(s.id, m.id, "staff-olga", "one customer, two cards")).contact
    assert merged.id == s.id
    assert merged.version == s.version + 1
    want_phones = [p.number for p in s.phones] + [p.number for p in m.phones]
    assert sorted(p.number for p in merged.phones) == sorted(want_phones)
    assert [p.number for p in merged.phones if p.primary] == [s.phones[0].number]
    want_emails = [e.address for e in s.emails] + [e.address for e in m.emails]
    assert sorted(e.address for e in merged.emails) == sorted(want_emails)
    assert sorted(merged.tags) == ["vip", "wholesale"]
    assert merged.birthday == m.birthday  # the survivor had none
    assert [f.name for f in merged.family] == ["Igor"]
    assert merged.given_name == "Olga"
    consents = {k.channel: k.granted for k in merged.consents}
    assert consents == {EMAIL: True, SMS: False, POST: True}
    assert api.must(api.get(s.id)).contact == merged
    # Everything is found on the survivor
    for number in want_phones:
        assert [c.id for c in api.must(api.find(phone=number)).contacts] == [s.id], number
    for address in want_emails:
        assert [c.id for c in api.must(api.find(email=address)).contacts] == [s.id], address
    notes = [n.text for n in api.must(api.list_notes(s.id)).notes]
    assert sorted(notes) == sorted(["note on the survivor", "first note on the merged",
                                    "second note on the merged"])
    # The merge is in the survivor's audit trail, with the consent history of both
    entries = list(api.must(api.list_audit(s.id)).entries)
    merges = [e for e in entries if e.action == "merged"]
    assert len(merges) == 1
    assert (merges[0].actor, merges[0].reason, merges[0].branch) == (
        "staff-olga", "one customer, two cards", branch)
    assert m.id in json.loads(merges[0].detail).values(), merges[0].detail
    assert [e.action for e in entries].count("consent_changed") == 3


def test_merge_keeps_the_latest_consent_per_channel(api, fresh):
    s = person(api, fresh, "Early", surname())
    m = person(api, fresh, "Late", surname())
    api.must(api.set_consent(s.id, EMAIL, True, WEB, "2026-01", "web-form"))
    api.must(api.set_consent(m.id, EMAIL, False, STAFF, "2026-03", "staff", "withdrew"))
    api.must(api.set_consent(m.id, SMS, True, STAFF, "2026-01", "staff"))
    api.must(api.set_consent(s.id, SMS, False, WEB, "2026-03", "web-form", "withdrew"))
    merged = api.must(api.merge(s.id, m.id, "staff")).contact
    consents = {k.channel: (k.granted, k.wording_version) for k in merged.consents}
    assert consents == {EMAIL: (False, "2026-03"), SMS: (False, "2026-03")}


def test_old_id_is_answered_with_the_survivor(api, fresh):
    s = person(api, fresh, "Survivor", surname())
    m = person(api, fresh, "Merged", surname())
    api.must(api.merge(s.id, m.id, "staff"))
    got = api.must(api.get(m.id)).contact
    assert got.id == s.id
    assert got == api.must(api.get(s.id)).contact
    check = api.must(api.check_consent(m.id, EMAIL))
    assert check.contact_id == s.id
    # A chain of merges is followed to its end
    middle = person(api, fresh, "Middle", surname())
    tail = person(api, fresh, "Tail", surname())
    api.must(api.merge(middle.id, tail.id, "staff"))
    api.must(api.merge(s.id, middle.id, "staff"))
    assert api.must(api.get(tail.id)).contact.id == s.id
    assert [p.number for p in tail.phones][0] in [p.number for p in
                                                  api.must(api.get(s.id)).contact.phones]


def test_note_on_a_merged_id_lands_on_the_survivor(api, fresh):
    s = person(api, fresh, "Survivor", surname())
    m = person(api, fresh, "Merged", surname())
    api.must(api.merge(s.id, m.id, "staff"))
    note = api.must(api.add_note(m.id, "said at the till")).note
    assert note.contact_id == s.id
    assert [n.id for n in api.must(api.list_notes(s.id)).notes] == [note.id]
    assert [n.id for n in api.must(api.list_notes(m.id)).notes] == [note.id]


def test_update_of_a_merged_id_is_refused(api, fresh):
    s = person(api, fresh, "Survivor", surname())
    m = person(api, fresh, "Merged", surname())
    merged = api.must(api.merge(s.id, m.id, "staff")).contact
    stale = contacts_pb2.Contact()
    stale.CopyFrom(m)
    stale.given_name = "Revived"
    reply = api.update(stale)
    assert reply.code == "FAILED_PRECONDITION", reply
    assert s.id in reply.message, reply
    # Not even at the version it would have now
    stale.version = m.version + 1
    assert api.update(stale).code == "FAILED_PRECONDITION"
    assert api.must(api.get(s.id)).contact == merged


def test_merge_into_itself_is_invalid(api, fresh):
    c = person(api, fresh, "Self", surname())
    reply = api.merge(c.id, c.id, "staff")
    assert reply.code == "INVALID_ARGUMENT", reply
    assert api.must(api.get(c.id)).contact == c


def test_merge_needs_an_actor_and_known_contacts(api, fresh):
    a = person(api, fresh, "Known", surname())
    b = person(api, fresh, "Known", surname())
    reply = api.merge(a.id, b.id, actor="")
    assert reply.code == "INVALID_ARGUMENT", reply
    assert api.merge(a.id, UNKNOWN_ID, "staff").code == "NOT_FOUND"
    assert api.merge(UNKNOWN_ID, b.id, "staff").code == "NOT_FOUND"
    assert api.must(api.get(a.id)).contact == a
    assert api.must(api.get(b.id)).contact == b


def test_merge_with_an_erased_contact_is_refused(api, fresh):
    live = person(api, fresh, "Live", surname())
    gone = person(api, fresh, "Gone", surname())
    api.must(api.erase(gone.id, "dpo", "asked to be forgotten"))
    for survivor, merged in ((gone.id, live.id), (live.id, gone.id)):
        reply = api.merge(survivor, merged, "staff")
        assert reply.code == "FAILED_PRECONDITION", (survivor == gone.id, reply)
        assert "erased" in reply.message, reply
    assert api.must(api.get(live.id)).contact == live
    assert [c.id for c in api.must(api.find(phone=live.phones[0].number)).contacts] == [live.id]


def test_merging_a_merged_contact_again_is_refused(api, fresh):
    s = person(api, fresh, "Survivor", surname())
    m = person(api, fresh, "Merged", surname())
    other = person(api, fresh, "Other", surname())
    meta = api.meta()
    first = api.merge(s.id, m.id, "staff", meta=meta)
    assert first.code == "OK", first
    # A resend of that merge is its answer again, not a second merge
    again = api.merge(s.id, m.id, "staff", meta=meta)
    assert again.code == "OK" and again.replayed, again
    assert again.response == first.response
    for survivor, merged in ((s.id, m.id), (other.id, m.id), (m.id, other.id)):
        reply = api.merge(survivor, merged, "staff")
        assert reply.code == "FAILED_PRECONDITION", reply
    assert api.must(api.get(other.id)).contact == other
    assert api.must(api.get(s.id)).contact == first.response.contact


def test_merged_record_keeps_only_its_id(api, fresh, maybe_pg):
    tag = "m" + fresh.tag()
    s = person(api, fresh, "Survivor", surname())
    m = person(api, fresh, "Merged", surname(), middle_name="Middle", preferred_address="Sir",
               birthday=date(1960, 6, 6), company="Old Co", job_title="Boss",
               addresses=[contacts_pb2.PostalAddress(city="Riga", country="LV")],
               tags=[tag], attributes={"k": "v"}, preferences=["tea"])
    api.must(api.add_note(m.id, "note"))
    api.must(api.set_consent(m.id, EMAIL, True, WEB, "1", "web"))
    api.must(api.merge(s.id, m.id, "staff"))
    assert [c.id for c in api.must(api.search(tag=tag)).contacts] == [s.id]
    if maybe_pg is None:
        return
    row = maybe_pg.query(
        "SELECT merged_into, given_name || middle_name || family_name || preferred_address"
        " || company || job_title, birthday IS NULL AND company_founded IS NULL,"
        " addresses::text, family::text, preferences::text, favourite_products::text,"
        " tags::text, attributes::text FROM contacts.contact WHERE id = '%s'" % m.id)
    assert row == [[s.id, "", "t", "[]", "[]", "{}", "{}", "{}", "{}"]], row
    for table in ("contact_phone", "contact_email", "contact_note", "contact_consent"):
        count = maybe_pg.scalar("SELECT count(*) FROM contacts.%s WHERE contact_id = '%s'"
                                % (table, m.id))
        assert count == "0", table


def test_merge_under_concurrent_updates(api, fresh, new_client, branch, maybe_pg):
    """Updates of both records and the merge, sent at once from several connections: the
    merge happens whole or not at all, and every version and channel adds up."""
    s = person(api, fresh, "Survivor", surname(), company="S-co")
    m = person(api, fresh, "Merged", surname(), company="M-co")
    clients = [new_client() for _ in range(4)]
    sent = []  # (client, kind, version, meta)

    def update(kind, base, version):
        c = clients[len(sent) % len(clients)]
        body = contacts_pb2.Contact()
        body.CopyFrom(base)
        body.version = version
        body.company = "%s-v%d" % (kind, version)
        meta = c.meta(branch=branch)
        c.send_call("contacts", "UpdateContact", contacts_pb2.UpdateContactRequest(contact=body),
                    meta)
        sent.append((c, kind, version, meta))

    for v in range(1, 4):
        update("S", s, v)
        update("M", m, v)
    c = clients[len(sent) % len(clients)]
    merge_meta = c.meta(branch=branch)
    c.send_call("contacts", "MergeContacts", contacts_pb2.MergeContactsRequest(
        survivor_id=s.id, merged_id=m.id, actor="staff", reason="race"), merge_meta)
    sent.append((c, "merge", 0, merge_meta))
    for v in range(1, 7):
        update("S", s, v)
        update("M", m, v)

    replies = {}
    for c, kind, version, meta in sent:
        got = c.recv_call(10000)
        assert got is not None, "a reply is missing"
        status = got[0]
        method = "MergeContacts" if status.request_id == merge_meta.request_id else "UpdateContact"
        replies[status.request_id] = api.decode(got, method)
    merge = replies[merge_meta.request_id]
    assert merge.code == "OK", merge
    changes = []  # (version after the change, kind, sent version) of the survivor
    for c, kind, version, meta in sent:
        r = replies[meta.request_id]
        if kind == "S":
            assert r.code in ("OK", "ABORTED"), (kind, version, r)
            if r.code == "OK":
                changes.append((r.response.contact.version, "update", version))
        elif kind == "M":
            assert r.code in ("OK", "ABORTED", "FAILED_PRECONDITION"), (kind, version, r)
        else:
            changes.append((r.response.contact.version, "merge", 0))
    changes.sort()
    final = api.must(api.get(s.id)).contact
    # Every successful change of the survivor bumped its version by one, none was lost
    assert [v for v, _, _ in changes] == list(range(2, 2 + len(changes))), changes
    assert final.version == 1 + (len(changes) - 1) + 1, (final.version, changes)
    # Updates were accepted only at the version they named
    for after, kind, named in changes:
        if kind == "update":
            assert after == named + 1, changes
    # Channels: the merge brought the merged record's; an update after the merge replaces the
    # survivor's list with the one it carries (the survivor's own)
    last_kind = changes[-1][1]
    s_phones = [p.number for p in s.phones]
    s_emails = [e.address for e in s.emails]
    m_phones = [p.number for p in m.phones]
    m_emails = [e.address for e in m.emails]
    if last_kind == "merge":
        assert sorted(p.number for p in final.phones) == sorted(s_phones + m_phones)
        assert sorted(e.address for e in final.emails) == sorted(s_emails + m_emails)
        assert final.company == ("S-co" if len(changes) == 1 else "S-v%d" % changes[-2][2])
    else:
        assert sorted(p.number for p in final.phones) == sorted(s_phones)
        assert final.company == "S-v%d" % changes[-1][2]
    for number in s_phones + m_phones:
        holders = [x.id for x in api.must(api.find(phone=number)).contacts]
        if number in s_phones or last_kind == "merge":
            assert holders == [s.id], (number, holders)
        else:
            assert holders == [], (number, holders)
    assert len({p.number for p in final.phones}) == len(final.phones), "a phone twice"
    assert len({e.address.lower() for e in final.emails}) == len(final.emails), "an email twice"
    # The merged id answers the survivor; its own record is only a pointer now
    assert api.must(api.get(m.id)).contact == final
    entries = [e for e in api.must(api.list_audit(s.id)).entries if e.action == "merged"]
    assert len(entries) == 1
    if maybe_pg is not None:
        row = maybe_pg.query("SELECT merged_into, given_name || family_name || company"
                             " FROM contacts.contact WHERE id = '%s'" % m.id)
        assert row == [[s.id, ""]], row
        for table in ("contact_phone", "contact_email"):
            count = maybe_pg.scalar("SELECT count(*) FROM contacts.%s WHERE contact_id = '%s'"
                                    % (table, m.id))
            assert count == "0", table


def test_merges_of_one_pair_both_ways_at_once(api, fresh, new_client, branch):
    """A into B and B into A sent together: one wins, the other is refused, no record is
    lost and neither points at the other in a circle."""
    for _ in range(3):
        a = person(api, fresh, "Pair", surname())
        b = person(api, fresh, "Pair", surname())
        clients = [new_client(), new_client()]
        metas = []
        for c, (survivor, merged) in zip(clients, ((a.id, b.id), (b.id, a.id))):
            meta = c.meta(branch=branch)
            c.send_call("contacts", "MergeContacts", contacts_pb2.MergeContactsRequest(
                survivor_id=survivor, merged_id=merged, actor="staff"), meta)
            metas.append(meta)
        replies = []
        for c in clients:
            got = c.recv_call(5000)
            assert got is not None, "no reply"
            replies.append(api.decode(got, "MergeContacts"))
        assert sorted(r.code for r in replies) == ["FAILED_PRECONDITION", "OK"], replies
        winner = [r for r in replies if r.code == "OK"][0].response.contact
        assert api.must(api.get(a.id)).contact == winner
        assert api.must(api.get(b.id)).contact == winner
        numbers = sorted(p.number for p in winner.phones)
        assert numbers == sorted([a.phones[0].number, b.phones[0].number])


def test_export_and_audit_of_a_merged_id_follow_the_survivor(api, fresh):
    s = person(api, fresh, "Survivor", surname())
    m = person(api, fresh, "Merged", surname())
    api.must(api.add_note(m.id, "note of the merged"))
    api.must(api.merge(s.id, m.id, "staff", "same person"))
    doc = json.loads(api.must(api.export(m.id, "dpo", "subject access request")).document)
    assert doc["contact"]["id"] == s.id
    assert m.id in json.dumps(doc.get("mergedIds", doc))
    assert [n["text"] for n in doc["notes"]] == ["note of the merged"]
    actions = [e.action for e in api.must(api.list_audit(m.id)).entries]
    assert actions == ["merged", "exported"], actions
