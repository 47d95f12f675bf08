"""test_mmi.py - the broker's service discovery (ZeroMQ RFC 8/MMI) as any MDP client sees it."""


def test_mmi_service_known(client):
    assert client.mmi_service("contacts") == "200"


def test_mmi_service_unknown(client):
    assert client.mmi_service("no-such-service") == "404"


def test_plain_req_client(new_client, fresh):
    # The lock-step REQ client of the RFC works as well as a DEALER
    req = new_client(socket_type="req")
    assert req.mmi_service("contacts") == "200"
    status, _ = req.call("contacts", "GetContact", b"", req.meta(branch=fresh.branch()))
    # An empty GetContactRequest has an empty id, which is no contact id
    assert status.code == 3, status
