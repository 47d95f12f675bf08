"""test_record.py - the whole contact record as a client keeps it: every field round-trips,
updates replace and bump the version, calling codes per branch, finding by tag, branch, fuzzy
name and coming birthdays, and the bad input the new fields and requests must refuse."""

import datetime
import uuid

import pytest
from crm.v1 import common_pb2, contacts_pb2

LATVIAN_BRANCH = "e2e-lv"  # tests/run-e2e.sh: CRM_BRANCH_CALLING_CODES="e2e-lv=371"
UNKNOWN_ID = "00000000-0000-4000-8000-00000000abcd"
MALFORMED_IDS = ("", "42", "not-a-uuid", "00000000-0000-4000-8000-00000000000g",
                 "{00000000-0000-4000-8000-000000000000}", "x" * 300)


def phone(number, label="", primary=False):
    return contacts_pb2.Phone(number=number, label=label, primary=primary)


def email(address, label="", primary=False):
    return contacts_pb2.Email(address=address, label=label, primary=primary)


def date(year, month, day):
    return common_pb2.Date(year=year, month=month, day=day)


def rich_contact(fresh, branch):
    """A contact with every field a caller may set, and its phone number in E.164."""
    m = fresh.mobile()
    contact = contacts_pb2.Contact(
        branch=branch,
        given_name="Anna",
        middle_name="Petrovna",
        family_name=fresh.name("Ivanova"),
        preferred_address="Anna Petrovna",
        first_name_allowed=True,
        phones=[phone(m.national, "mobile", True)],
        emails=[email(fresh.email("Anna"), "work", True), email(fresh.email("anna.home"))],
        birthday=date(1984, 2, 29),
        addresses=[
            contacts_pb2.PostalAddress(
                label="home", primary=True, street="Brīvības iela 21-4", city="Rīga",
                postal_code="LV-1010", region="Rīgas novads", country="LV",
            ),
            contacts_pb2.PostalAddress(label="office", city="Berlin", country="DE"),
        ],
        company="Baltic Amber SIA",
        job_title="Head of purchasing",
        company_founded=date(1998, 4, 1),
        family=[
            contacts_pb2.FamilyMember(name="Pavel", relation="spouse", birthday=date(1980, 5, 17)),
            contacts_pb2.FamilyMember(name="Sofia", relation="daughter",
                                      birthday=date(2012, 2, 29)),
            contacts_pb2.FamilyMember(name="Vera", relation="mother"),
        ],
        preferences=["window seat", "no calls before 10"],
        favourite_products=["Earl Grey", "Sachertorte"],
        tags=["vip", "wholesale"],
        attributes={"loyalty_card": "LV-00017", "shoe_size": "38", "remark": "üñíçødé"},
    )
    return contact, m.e164


def without_server_fields(contact):
    """A copy of contact with what the service sets or keeps read-only cleared."""
    copy = contacts_pb2.Contact()
    copy.CopyFrom(contact)
    for field in ("id", "version", "created_unix_ms", "updated_unix_ms", "value", "consents",
                  "erased_unix_ms"):
        copy.ClearField(field)
    return copy


def expected_stored(sent, e164s):
    """What the service should store for sent: phones in E.164, the rest as given."""
    want = without_server_fields(sent)
    for p, number in zip(want.phones, e164s):
        p.number = number
    return want


# --- the record -----------------------------------------------------------------------------


def test_whole_record_round_trips(api, fresh, branch):
    sent, e164 = rich_contact(fresh, branch)
    created = api.must(api.create(sent)).contact
    assert created.version == 1
    want = expected_stored(sent, [e164])
    assert without_server_fields(created) == want
    got = api.must(api.get(created.id)).contact
    assert got == created
    # Each part on its own, so a failure says which
    assert [(a.label, a.primary, a.street, a.city, a.postal_code, a.region, a.country)
            for a in got.addresses] == [
        ("home", True, "Brīvības iela 21-4", "Rīga", "LV-1010", "Rīgas novads", "LV"),
        ("office", False, "", "Berlin", "", "", "DE"),
    ]
    assert (got.company, got.job_title) == ("Baltic Amber SIA", "Head of purchasing")
    assert got.company_founded == date(1998, 4, 1)
    assert [(f.name, f.relation, f.HasField("birthday") and
             (f.birthday.year, f.birthday.month, f.birthday.day)) for f in got.family] == [
        ("Pavel", "spouse", (1980, 5, 17)),
        ("Sofia", "daughter", (2012, 2, 29)),
        ("Vera", "mother", False),
    ]
    assert list(got.preferences) == ["window seat", "no calls before 10"]
    assert list(got.favourite_products) == ["Earl Grey", "Sachertorte"]
    assert sorted(got.tags) == ["vip", "wholesale"]
    assert dict(got.attributes) == {"loyalty_card": "LV-00017", "shoe_size": "38",
                                    "remark": "üñíçødé"}
    assert got.erased_unix_ms == 0


def test_new_contact_has_readable_value_figures(api, fresh):
    c = api.must(api.create(given_name="Valued", phones=[phone(fresh.mobile().national)]))
    c = api.must(api.get(c.contact.id)).contact
    assert c.HasField("value"), c
    assert c.value.segment == "none"
    assert c.value.purchase_count == 0
    assert c.value.last_purchase_unix_ms == 0
    assert not c.value.HasField("first_deal")
    assert c.value.total_spend.minor_units == 0
    assert list(c.consents) == []


def test_tags_are_trimmed_and_lowercased(api, fresh):
    c = api.must(api.create(given_name="Tagged", phones=[phone(fresh.mobile().national)],
                            tags=[" VIP ", "Wholesale", "new_2026"])).contact
    assert list(c.tags) == ["vip", "wholesale", "new_2026"]
    assert list(api.must(api.get(c.id)).contact.tags) == ["vip", "wholesale", "new_2026"]


def test_tags_in_other_alphabets_are_lowercased_too(api, fresh):
    """Staff in Riga and Berlin tag in Latvian, Russian and German as well."""
    c = api.must(api.create(given_name="Tagged", phones=[phone(fresh.mobile().national)],
                            tags=["ПОСТОЯННЫЙ", "RĪGA", "Über"])).contact
    assert list(c.tags) == ["постоянный", "rīga", "über"]
    found = api.must(api.search(tag="Постоянный")).contacts
    assert c.id in ids(found)
    reply = api.create(given_name="Twice", phones=[phone(fresh.mobile().national)],
                       tags=["Über", "über"])
    assert reply.code == "INVALID_ARGUMENT", reply


@pytest.mark.parametrize("tags", [["vip", " VIP "], ["Gold", "gold"], ["a", "b", "a"]])
def test_duplicate_tags_refused(api, fresh, tags):
    m = fresh.mobile()
    reply = api.create(given_name="Twice", phones=[phone(m.national)], tags=tags)
    assert reply.code == "INVALID_ARGUMENT", (tags, reply)
    assert "twice" in reply.message, reply
    assert len(api.must(api.find(phone=m.e164)).contacts) == 0


def test_consents_listed_on_the_record(api, fresh):
    c = api.must(api.create(given_name="Consenting", phones=[phone(fresh.mobile().national)],
                            emails=[email(fresh.email())])).contact
    api.must(api.set_consent(c.id, contacts_pb2.CHANNEL_SMS, True, contacts_pb2.CONSENT_SOURCE_WEB,
                             "2026-03", "web-form"))
    api.must(api.set_consent(c.id, contacts_pb2.CHANNEL_EMAIL, False,
                             contacts_pb2.CONSENT_SOURCE_STAFF, "2026-01", "staff-olga"))
    got = api.must(api.get(c.id)).contact
    listed = sorted((k.channel, k.granted, k.source, k.wording_version, k.recorded_by, k.branch)
                    for k in got.consents)
    assert listed == [
        (contacts_pb2.CHANNEL_EMAIL, False, contacts_pb2.CONSENT_SOURCE_STAFF, "2026-01",
         "staff-olga", api.default_branch),
        (contacts_pb2.CHANNEL_SMS, True, contacts_pb2.CONSENT_SOURCE_WEB, "2026-03", "web-form",
         api.default_branch),
    ]
    assert all(k.changed_unix_ms > 0 for k in got.consents)
    # Consents are not part of the record's version: SetConsent does not bump it
    assert got.version == 1


def test_update_replaces_the_record_and_bumps_version(api, fresh, branch):
    created = api.must(api.create(rich_contact(fresh, branch)[0])).contact
    c = contacts_pb2.Contact()
    c.CopyFrom(created)  # the whole record as read, read-only parts included
    del c.addresses[:]
    c.addresses.add(label="new home", primary=True, street="Unter den Linden 1", city="Berlin",
                    postal_code="10117", country="DE")
    c.company = "Amber GmbH"
    c.job_title = "Owner"
    c.company_founded.CopyFrom(date(2020, 1, 31))
    del c.family[1:]
    c.family[0].relation = "husband"
    del c.preferences[:]
    c.favourite_products.append("Stollen")
    del c.tags[:]
    c.tags.extend(["Retail", "vip"])
    del c.attributes["shoe_size"]
    c.attributes["newsletter"] = "monthly"
    c.birthday.CopyFrom(date(1984, 3, 1))
    c.first_name_allowed = False
    updated = api.must(api.update(c)).contact
    assert updated.id == created.id
    assert updated.version == 2
    assert updated.created_unix_ms == created.created_unix_ms
    assert updated.updated_unix_ms >= created.updated_unix_ms
    want = without_server_fields(c)
    want.tags[:] = ["retail", "vip"]
    assert without_server_fields(updated) == want
    got = api.must(api.get(c.id)).contact
    assert got == updated
    assert [a.street for a in got.addresses] == ["Unter den Linden 1"]
    assert [(f.name, f.relation) for f in got.family] == [("Pavel", "husband")]
    assert list(got.preferences) == []
    assert dict(got.attributes) == {"loyalty_card": "LV-00017", "remark": "üñíçødé",
                                    "newsletter": "monthly"}


def test_read_only_parts_sent_in_an_update_are_ignored(api, fresh):
    c = api.must(api.create(given_name="Plain", phones=[phone(fresh.mobile().national)])).contact
    api.must(api.set_consent(c.id, contacts_pb2.CHANNEL_SMS, False,
                             contacts_pb2.CONSENT_SOURCE_STAFF, "2026-03", "staff"))
    c = api.must(api.get(c.id)).contact
    forged = contacts_pb2.Contact()
    forged.CopyFrom(c)
    forged.given_name = "Changed"
    forged.value.purchase_count = 99
    forged.value.segment = "champion"
    forged.value.total_spend.minor_units = 10 ** 9
    forged.value.total_spend.currency = "EUR"
    del forged.consents[:]
    forged.consents.add(channel=contacts_pb2.CHANNEL_SMS, granted=True, recorded_by="forger")
    forged.erased_unix_ms = 1234
    updated = api.must(api.update(forged)).contact
    assert updated.given_name == "Changed" and updated.version == 2
    assert updated.value == c.value
    assert list(updated.consents) == list(c.consents)
    assert updated.erased_unix_ms == 0
    assert api.must(api.check_consent(c.id, contacts_pb2.CHANNEL_SMS)).allowed is False


def test_stale_update_of_the_record_changes_nothing(api, fresh, branch):
    created = api.must(api.create(rich_contact(fresh, branch)[0])).contact
    first = contacts_pb2.Contact()
    first.CopyFrom(created)
    first.company = "First Writer Ltd"
    after_first = api.must(api.update(first)).contact
    stale = contacts_pb2.Contact()
    stale.CopyFrom(created)  # still at version 1
    stale.company = "Second Writer Ltd"
    del stale.tags[:]
    del stale.addresses[:]
    stale.attributes["stale"] = "yes"
    reply = api.update(stale)
    assert reply.code == "ABORTED", reply
    assert "version" in reply.message
    got = api.must(api.get(created.id)).contact
    assert got == after_first
    assert got.version == 2 and got.company == "First Writer Ltd"


# --- calling codes per branch -----------------------------------------------------------------


def test_national_numbers_take_the_calling_code_of_the_request_branch(api, fresh):
    d = fresh.mobile().digits
    latvian = "2%07d" % (int(d) % 10 ** 7)
    lv = api.meta(branch=LATVIAN_BRANCH)
    national = "%s %s" % (latvian[:4], latvian[4:])
    c = api.must(api.create(given_name="Līga", phones=[phone(national)],
                            meta=lv)).contact
    assert [p.number for p in c.phones] == ["+371" + latvian]
    assert c.branch == LATVIAN_BRANCH
    # Found from that branch by the national form, and from anywhere by the international one
    found = api.must(api.search(phone=latvian, meta=api.meta(branch=LATVIAN_BRANCH))).contacts
    assert [x.id for x in found] == [c.id]
    found = api.must(api.find(phone="00371 " + latvian)).contacts
    assert [x.id for x in found] == [c.id]
    # An international number stays what it is in the Latvian branch
    m = fresh.mobile()
    c2 = api.must(api.create(given_name="Visitor", phones=[phone(m.international)],
                             meta=api.meta(branch=LATVIAN_BRANCH))).contact
    assert [p.number for p in c2.phones] == [m.e164]
    # Every other branch uses the default 49
    m = fresh.mobile()
    c3 = api.must(api.create(given_name="Berliner", phones=[phone(m.national)])).contact
    assert [p.number for p in c3.phones] == [m.e164]
    assert m.e164.startswith("+49")


# --- finding --------------------------------------------------------------------------------


def ids(contacts):
    return [c.id for c in contacts]


def all_pages(api, page_size, **criteria):
    """Every page of a FindContacts; returns (ids in order, page sizes, tokens)."""
    seen, sizes, tokens, token = [], [], [], ""
    for _ in range(20):
        response = api.must(api.search(page_size=page_size, page_token=token, **criteria))
        seen += ids(response.contacts)
        sizes.append(len(response.contacts))
        token = response.page.next_page_token
        if not token:
            return seen, sizes, tokens
        tokens.append(token)
    raise AssertionError("paging does not end: %r" % sizes)


def test_find_by_tag_with_paging(api, fresh):
    tag = "t" + fresh.tag()
    tagged = {api.must(api.create(given_name="Tag%d" % i, tags=[tag, "other"],
                                  phones=[phone(fresh.mobile().national)])).contact.id
              for i in range(5)}
    api.must(api.create(given_name="Untagged", phones=[phone(fresh.mobile().national)],
                        tags=["other"]))
    # The query is normalised like the stored tags
    found = api.must(api.search(tag="  " + tag.upper() + " ")).contacts
    assert set(ids(found)) == tagged
    assert all(tag in c.tags for c in found)
    seen, sizes, _ = all_pages(api, 2, tag=tag)
    assert sizes == [2, 2, 1]
    assert len(seen) == len(set(seen)) and set(seen) == tagged
    again, _, _ = all_pages(api, 2, tag=tag)
    assert again == seen, "order not stable"


def test_branch_narrows_a_search(api, fresh, branch):
    tag = "t" + fresh.tag()
    family = fresh.name("Narrow")
    here = api.must(api.create(given_name="Here", family_name=family, tags=[tag])).contact
    elsewhere_branch = fresh.branch()
    there = api.must(api.create(given_name="There", family_name=family, tags=[tag],
                                branch=elsewhere_branch)).contact
    assert set(ids(api.must(api.search(tag=tag)).contacts)) == {here.id, there.id}
    assert ids(api.must(api.search(tag=tag, branch=branch)).contacts) == [here.id]
    assert ids(api.must(api.search(tag=tag, branch=elsewhere_branch)).contacts) == [there.id]
    assert ids(api.must(api.search(name=family, branch=elsewhere_branch)).contacts) == [there.id]
    assert ids(api.must(api.search(tag=tag, branch=fresh.branch())).contacts) == []


def test_fuzzy_name_finds_a_typo_best_match_first(api, branch):
    best = api.must(api.create(given_name="Anna", family_name="Ivanova")).contact
    second = api.must(api.create(given_name="Anna", middle_name="Petrovna",
                                 family_name="Ivanova")).contact
    api.must(api.create(given_name="Maria", family_name="Schmidt"))
    found = api.must(api.search(fuzzy_name="Anna Ivanvoa", branch=branch)).contacts
    assert ids(found) == [best.id, second.id], [(c.given_name, c.middle_name, c.family_name)
                                                for c in found]


def test_fuzzy_family_name_with_a_typo_finds_the_customer(api, fresh, branch):
    """Staff type the family name they heard, with a typo: "Ivanvoa" finds Anna Ivanova."""
    anna = api.must(api.create(given_name="Anna", family_name="Ivanova")).contact
    bare = api.must(api.create(family_name="Ivanova", phones=[phone(fresh.mobile().national)]))
    found = ids(api.must(api.search(fuzzy_name="Ivanvoa", branch=branch)).contacts)
    assert bare.contact.id in found
    assert anna.id in found, "fuzzy search for \"Ivanvoa\" did not find Anna Ivanova: %r" % found


def test_fuzzy_paging_by_offset_tokens(api, branch):
    made = {api.must(api.create(given_name="Anna", family_name="Ivanova")).contact.id
            for _ in range(5)}
    seen, sizes, tokens = all_pages(api, 2, fuzzy_name="Anna Ivanvoa", branch=branch)
    assert sizes == [2, 2, 1]
    assert tokens == ["o2", "o4"]
    assert len(seen) == len(set(seen)), "a contact on two pages"
    assert set(seen) == made
    again, _, _ = all_pages(api, 2, fuzzy_name="Anna Ivanvoa", branch=branch)
    assert again == seen, "order not stable"
    reply = api.search(fuzzy_name="Anna Ivanvoa", branch=branch, page_token="o-1")
    assert reply.code == "INVALID_ARGUMENT", reply


# --- fuzzy names by words -------------------------------------------------------------------
# Names of letters only, unique to the test: the dictionary of name words is shared by every
# contact, and a test's words must be close to nothing another test made.


def letters(alphabet="abcdefghijklmnopqrstuvwxyz"):
    """Eight letters of alphabet nobody else uses, starting with an uppercase one."""
    n, word = uuid.uuid4().int, ""
    for _ in range(8):
        n, k = divmod(n, len(alphabet))
        word += alphabet[k]
    return word.capitalize()


def names(contacts):
    return [(c.given_name, c.middle_name, c.family_name) for c in contacts]


def fuzzy(api, text, branch, **more):
    return api.must(api.search(fuzzy_name=text, branch=branch, **more)).contacts


def swap(word, i):
    """word with its letters i and i + 1 swapped: the commonest typo."""
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def test_fuzzy_typos_in_given_or_family_name(api, branch):
    family = "Wol" + letters().lower()
    meant = api.must(api.create(given_name="Katharina", family_name=family)).contact
    api.must(api.create(given_name="Katharina", family_name="Weber" + letters().lower()))
    api.must(api.create(given_name="Karin", family_name=family))
    typos = [
        "Katharnia " + family,           # letters swapped in the given name
        "Kathrina " + family,            # one left out
        "Katharina " + family[:4] + family[5:],
        "Katharina " + swap(family, 3),
        "Katharina " + family[:4] + "x" + family[5:],  # one wrong
        "katharina " + family.upper(),   # case does not matter
    ]
    for typed in typos:
        found = fuzzy(api, typed, branch)
        assert found and found[0].id == meant.id, (typed, names(found))


def test_fuzzy_transposed_short_given_name(api, branch):
    """"Anan" is too short for trigrams to see "Anna" in it; a swap of two letters does."""
    family = letters()
    anna = api.must(api.create(given_name="Anna", family_name=family)).contact
    found = fuzzy(api, "Anan " + family, branch)
    assert ids(found) == [anna.id], names(found)


def test_fuzzy_single_word_finds_full_names(api, branch):
    family = letters()
    anna = api.must(api.create(given_name="Anna", middle_name="Maria", family_name=family)).contact
    boris = api.must(api.create(given_name="Boris", family_name=family)).contact
    assert set(ids(fuzzy(api, swap(family, 2), branch))) == {anna.id, boris.id}
    assert ids(fuzzy(api, "Mraia", branch)) == [anna.id]


def test_fuzzy_cyrillic_names(api, branch):
    """Cyrillic is lowercased and split into words like Latin (the database's ctype is
    Unicode); a typo in a Cyrillic family name finds the customer first."""
    family = letters("абвгдежзиклмнопрстуфхцчшэюя")
    anna = api.must(api.create(given_name="Анна", middle_name="Петровна",
                               family_name=family + "ова")).contact
    api.must(api.create(given_name="Анна", family_name=family + "ин"))
    alla = api.must(api.create(given_name="Алла", family_name=family + "ова")).contact
    word = family + "ова"
    for typed in ("Анна " + swap(word, 4), "АННА " + word.upper(), "анан " + word,
                  "Анна Птеровна " + word):
        found = fuzzy(api, typed, branch)
        assert found and found[0].id == anna.id, (typed, names(found))
    assert set(ids(fuzzy(api, swap(word, 5), branch))) == {anna.id, alla.id}


def test_fuzzy_name_typed_halfway(api, branch):
    """The last word may still be being typed: it stands for the names it begins."""
    family = letters()
    meant = api.must(api.create(given_name="Henrietta", family_name=family)).contact
    api.must(api.create(given_name="Henry", family_name=letters()))
    assert ids(fuzzy(api, "Henrietta " + family[:5], branch)) == [meant.id]
    assert ids(fuzzy(api, family + " Henri", branch)) == [meant.id]


def test_fuzzy_word_that_matches_nothing(api, branch):
    """A word close to no name only ranks; when no word is close to any name nothing is
    found, at once."""
    family = letters()
    meant = api.must(api.create(given_name="Ottilie", family_name=family)).contact
    found = fuzzy(api, "Ottilie Qxzqxzqxz", branch)
    assert ids(found) == [meant.id], names(found)
    assert ids(fuzzy(api, family + " Qxzqxzqxz", branch)) == [meant.id]
    # Nothing anywhere, in any branch
    reply = api.search(fuzzy_name="Qxzqxzqxz Wvqwvqwvq", timeout_ms=2000)
    assert ids(api.must(reply).contacts) == []
    assert ids(api.must(api.search(fuzzy_name="Q", branch=branch)).contacts) == []


def test_fuzzy_branch_narrows(api, fresh, branch):
    family = letters()
    here = api.must(api.create(given_name="Ingrid", family_name=family)).contact
    other = fresh.branch()
    there = api.must(api.create(given_name="Ingrid", family_name=family, branch=other)).contact
    typed = "Ingird " + family
    assert ids(fuzzy(api, typed, branch)) == [here.id]
    assert ids(fuzzy(api, typed, other)) == [there.id]
    assert set(ids(api.must(api.search(fuzzy_name=typed)).contacts)) == {here.id, there.id}
    assert ids(fuzzy(api, typed, fresh.branch())) == []


def test_fuzzy_pages_are_stable_and_ties_go_by_id(api, branch):
    family = letters()
    same = sorted(api.must(api.create(given_name="Paula", family_name=family)).contact.id
                  for _ in range(5))
    longer = api.must(api.create(given_name="Paula", middle_name="Maria",
                                 family_name=family)).contact.id
    seen, sizes, tokens = all_pages(api, 2, fuzzy_name="Paulla " + family, branch=branch)
    assert sizes == [2, 2, 2] and tokens == ["o2", "o4"]
    # Equal names tie and go by id; the name with a word more ranks after them
    assert seen == same + [longer]
    again, _, _ = all_pages(api, 4, fuzzy_name="Paulla " + family, branch=branch)
    assert again == seen


def test_fuzzy_never_finds_merged_or_erased(api, branch, maybe_pg):
    family = letters()
    survivor = api.must(api.create(given_name="Greta", family_name=family)).contact
    merged = api.must(api.create(given_name="Greta", family_name=family)).contact
    erased_family = letters()
    erased = api.must(api.create(given_name="Greta", family_name=erased_family)).contact
    api.must(api.merge(survivor.id, merged.id))
    api.must(api.erase(erased.id))
    assert ids(fuzzy(api, "Gerta " + family, branch)) == [survivor.id]
    # The erased name is close to nothing now: "Greta" alone decides
    assert ids(fuzzy(api, "Greta " + swap(erased_family, 3), branch)) == [survivor.id]
    assert ids(fuzzy(api, erased_family, branch)) == []
    assert ids(fuzzy(api, "Greta", branch)) == [survivor.id]
    if maybe_pg is not None:
        # The erased customer's rare name is not kept in the dictionary either
        held = maybe_pg.scalar("SELECT count(*) FROM contacts.contact_name_word WHERE word = '%s'"
                               % erased_family.lower())
        assert held == "0"


def test_fuzzy_dictionary_follows_creates_and_updates(api, branch):
    old, new = letters(), letters()
    c = api.must(api.create(given_name="Dorothea", family_name=old)).contact
    assert ids(fuzzy(api, swap(old, 3), branch)) == [c.id]
    c.family_name = new
    c = api.must(api.update(c)).contact
    assert ids(fuzzy(api, "Dorothea " + swap(new, 2), branch)) == [c.id]
    assert ids(fuzzy(api, swap(new, 4), branch)) == [c.id]
    assert ids(fuzzy(api, old, branch)) == []
    # An update that keeps the name keeps it findable
    c.company = "Dorothea Trading"
    c = api.must(api.update(c)).contact
    assert ids(fuzzy(api, "Dorohtea " + new, branch)) == [c.id]


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


def test_find_birthdays_within_days(api, fresh):
    for _ in range(2):  # once more if the UTC day changed while the test ran
        today = utc_today()
        branch_now = fresh.branch()
        made = {}
        for offset in (1, 5, 40, -1, 0):
            day = today + datetime.timedelta(days=offset)
            # 1988 is a leap year, so a coming 29 February is a birthday too
            c = api.must(api.create(given_name="Born%+d" % offset, branch=branch_now,
                                    birthday=date(1988, day.month, day.day))).contact
            made[offset] = c.id
        week = api.must(api.search(birthday_within_days=7, branch=branch_now))
        year = api.must(api.search(birthday_within_days=366, branch=branch_now))
        tomorrow = api.must(api.search(birthday_within_days=1, branch=branch_now))
        if utc_today() == today:
            break
    # From today on, soonest first, across the turn of the year
    assert ids(week.contacts) == [made[0], made[1], made[5]]
    assert ids(tomorrow.contacts) == [made[0], made[1]]
    assert ids(year.contacts) == [made[0], made[1], made[5], made[40], made[-1]]
    seen, sizes, tokens = all_pages(api, 3, birthday_within_days=366, branch=branch_now)
    assert seen == ids(year.contacts) and sizes == [3, 2] and tokens == ["o3"]
    reply = api.search(birthday_within_days=367, branch=branch_now)
    assert reply.code == "INVALID_ARGUMENT", reply


def test_find_needs_exactly_one_criterion_of_all(api, fresh, branch):
    m = fresh.mobile()
    pairs = [
        dict(tag="vip", fuzzy_name="Anna"),
        dict(tag="vip", birthday_within_days=7),
        dict(fuzzy_name="Anna", name="Anna"),
        dict(birthday_within_days=7, phone=m.e164),
        dict(email=fresh.email(), tag="vip"),
        dict(branch=branch),  # a narrowing, not a criterion
        dict(),
    ]
    for criteria in pairs:
        reply = api.search(**criteria)
        assert reply.code == "INVALID_ARGUMENT", (criteria, reply)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["51-tags", "51-family", "51-preferences", "bad-tag",
                                  "long-tag", "lowercase-country", "empty-address",
                                  "nameless-family", "feb-30-family", "empty-attribute-name",
                                  "long-attribute-name", "founded-month-13"])
def test_absurd_record_refused_and_nothing_half_changed(api, fresh, what):
    m = fresh.mobile()
    good = api.must(api.create(given_name="Before", phones=[phone(m.national)],
                               tags=["keep"])).contact
    c = contacts_pb2.Contact()
    c.CopyFrom(good)
    c.given_name = "After"
    if what == "51-tags":
        c.tags[:] = ["t%d" % i for i in range(51)]
    elif what == "51-family":
        c.family.extend(contacts_pb2.FamilyMember(name="Kid %d" % i) for i in range(51))
    elif what == "51-preferences":
        c.preferences.extend("likes %d" % i for i in range(51))
    elif what == "bad-tag":
        c.tags.append("v i p")
    elif what == "long-tag":
        c.tags.append("t" * 65)
    elif what == "lowercase-country":
        c.addresses.add(city="Rīga", country="lv")
    elif what == "empty-address":
        c.addresses.add(label="home", country="LV")
    elif what == "nameless-family":
        c.family.add(relation="son")
    elif what == "feb-30-family":
        c.family.add(name="Kid", birthday=date(2015, 2, 30))
    elif what == "empty-attribute-name":
        c.attributes[""] = "value"
    elif what == "long-attribute-name":
        c.attributes["k" * 65] = "value"
    elif what == "founded-month-13":
        c.company_founded.CopyFrom(date(2001, 13, 1))
    reply = api.update(c)
    assert reply.code == "INVALID_ARGUMENT", (what, reply)
    assert reply.message and reply.message.isprintable(), (what, reply.message)
    assert api.must(api.get(good.id)).contact == good
    # Nor can a new contact be created with it
    c.ClearField("id")
    c.ClearField("version")
    c.ClearField("created_unix_ms")
    c.ClearField("updated_unix_ms")
    c.ClearField("value")
    m2 = fresh.mobile()
    c.phones[0].number = m2.national
    reply = api.create(c)
    assert reply.code == "INVALID_ARGUMENT", (what, reply)
    assert len(api.must(api.find(phone=m2.e164)).contacts) == 0


def test_lists_of_fifty_are_accepted(api, fresh):
    c = api.must(api.create(
        given_name="Fifty", phones=[phone(fresh.mobile().national)],
        tags=["t%d" % i for i in range(50)],
        family=[contacts_pb2.FamilyMember(name="Kid %d" % i) for i in range(50)],
    )).contact
    assert len(c.tags) == 50 and len(c.family) == 50


def _by_id_requests(bad):
    """One request of each new rpc naming the contact bad."""
    return [
        ("FindDuplicates", contacts_pb2.FindDuplicatesRequest(contact_id=bad)),
        ("MergeContacts", contacts_pb2.MergeContactsRequest(
            survivor_id=bad, merged_id=str(uuid.uuid4()), actor="e2e")),
        ("MergeContacts", contacts_pb2.MergeContactsRequest(
            survivor_id=str(uuid.uuid4()), merged_id=bad, actor="e2e")),
        ("AddNote", contacts_pb2.AddNoteRequest(contact_id=bad, text="hello", author="e2e")),
        ("ListNotes", contacts_pb2.ListNotesRequest(contact_id=bad)),
        ("SetConsent", contacts_pb2.SetConsentRequest(
            contact_id=bad, channel=contacts_pb2.CHANNEL_EMAIL, granted=True,
            source=contacts_pb2.CONSENT_SOURCE_WEB, recorded_by="e2e")),
        ("CheckConsent", contacts_pb2.CheckConsentRequest(
            contact_id=bad, channel=contacts_pb2.CHANNEL_EMAIL)),
        ("ListAudit", contacts_pb2.ListAuditRequest(contact_id=bad)),
        ("ExportContact", contacts_pb2.ExportContactRequest(contact_id=bad, actor="e2e")),
        ("EraseContact", contacts_pb2.EraseContactRequest(
            contact_id=bad, actor="e2e", reason="asked")),
    ]


@pytest.mark.parametrize("bad", MALFORMED_IDS,
                         ids=["empty", "number", "word", "non-hex", "braces", "300-chars"])
def test_malformed_ids_refused_by_every_new_request(api, bad):
    for method, request in _by_id_requests(bad):
        reply = api.call(method, request)
        assert reply.code == "INVALID_ARGUMENT", (method, bad, reply)


def test_unknown_ids_are_not_found_by_every_new_request(api):
    for method, request in _by_id_requests(UNKNOWN_ID):
        reply = api.call(method, request)
        assert reply.code == "NOT_FOUND", (method, reply)
