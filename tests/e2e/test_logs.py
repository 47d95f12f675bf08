"""test_logs.py - the operators' view: structured JSON log lines, and a refused request's line
carrying its request id."""

import json

import pytest

FIELDS = ("ts", "level", "service", "msg")


@pytest.mark.parametrize("process", ["contacts", "broker"])
def test_log_lines_are_json(logs, process):
    lines = logs.lines(process)
    assert lines, "%s wrote no log line" % process
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError("%s log line is not JSON: %r" % (process, line[:200]))
        assert isinstance(entry, dict), line[:200]
        missing = [f for f in FIELDS if f not in entry]
        assert not missing, "%s log line lacks %s: %r" % (process, missing, line[:200])
        assert entry["level"] in ("debug", "info", "warn", "error"), line[:200]


def test_contacts_lines_name_their_service(logs):
    for line in logs.lines("contacts"):
        assert json.loads(line)["service"] == "contacts", line[:200]


def test_refused_request_is_logged_with_its_request_id(api, fresh, logs):
    request_id = "e2e-log-" + fresh.tag()
    reply = api.get("not-a-contact-id", meta=api.meta(request_id=request_id))
    assert reply.code == "INVALID_ARGUMENT", reply
    assert reply.request_id == request_id

    def ours():
        entries = map(json.loads, logs.lines("contacts"))
        return [e for e in entries if e.get("request_id") == request_id]

    entries = logs.wait_for(ours, 3)
    assert entries, "no contacts log line carries request_id %s" % request_id
    entry = entries[-1]
    assert entry["service"] == "contacts"
    assert entry["level"] in ("info", "warn", "error"), entry
    assert entry.get("branch") == api.default_branch, entry
