"""test_mmi.py - the broker's service discovery (ZeroMQ RFC 8/MMI) as any MDP client sees it."""

import time

import zmq

from conftest import BROKER


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


def test_a_worker_on_the_client_endpoint_is_not_heard(client):
    # Workers register on the broker's worker endpoint only: whoever can reach the endpoint
    # clients use may call the services, not pose as one. The intruder's READY is dropped,
    # and a request for its service finds no worker.
    intruder = zmq.Context.instance().socket(zmq.DEALER)
    intruder.setsockopt(zmq.LINGER, 0)
    intruder.connect(BROKER)
    try:
        intruder.send_multipart([b"", b"MDPW01", b"\x01", b"intruder"])
        time.sleep(0.3)
        assert client.mmi_service("intruder") == "404"
        assert client.mmi_service("contacts") == "200"
        assert intruder.poll(200) == 0, "the broker sent the intruder something"
    finally:
        intruder.close()
