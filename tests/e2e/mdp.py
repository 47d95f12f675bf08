"""mdp.py - a small ZeroMQ RFC 7/MDP 0.1 (Majordomo) client for the end-to-end suite.

It speaks only what docs/protocol.md promises any client: plain MDP client frames to the
broker, a request body of [method][RequestMeta][payload] and a reply body of
[Status][payload]. Run as a program it asks the broker's mmi.service about a service, which
the harness uses to wait until the suite is up.
"""

import argparse
import sys
import time
import uuid

import zmq

MDPC = b"MDPC01"


class ProtocolError(Exception):
    """A reply that does not follow 7/MDP or the suite's reply body."""


def _frame(value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    # A protobuf message
    return value.SerializeToString(deterministic=True)


class Client:
    """One connection to the broker.

    socket_type "dealer" (default) allows several requests in flight; "req" is the plain
    lock-step client of the RFC, reconnected after a timeout as the RFC's lazy pirate does.
    """

    def __init__(self, endpoint, timeout_ms=5000, socket_type="dealer", context=None, curve=None):
        """curve: (broker public key, own public key, own secret key), Z85 bytes, for a broker
        with CURVE."""
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.socket_type = socket_type
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self.socket = None
        self._connect()

    def _connect(self):
        if self.socket is not None:
            self.socket.close(linger=0)
        kind = zmq.DEALER if self.socket_type == "dealer" else zmq.REQ
        self.socket = self.context.socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        if self.curve:
            server, public, secret = self.curve
            self.socket.curve_serverkey = server
            self.socket.curve_publickey = public
            self.socket.curve_secretkey = secret
        self.socket.connect(self.endpoint)

    def close(self):
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- raw MDP ---------------------------------------------------------------

    def send(self, service, body):
        """Sends a request with body frames (bytes, str or protobuf messages) to service."""
        frames = [MDPC, _frame(service)] + [_frame(f) for f in body]
        if self.socket_type == "dealer":
            frames.insert(0, b"")
        self.socket.send_multipart(frames)

    def recv(self, timeout_ms=None):
        """Waits for one reply; returns (service, body frames) or None on timeout."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        if not self.socket.poll(timeout, zmq.POLLIN):
            if self.socket_type == "req":
                # A REQ socket waiting for a lost reply is stuck: start afresh
                self._connect()
            return None
        frames = self.socket.recv_multipart()
        if self.socket_type == "dealer":
            if not frames or frames[0] != b"":
                raise ProtocolError("reply without the empty delimiter frame: %r" % frames[:3])
            frames = frames[1:]
        if len(frames) < 2 or frames[0] != MDPC:
            raise ProtocolError("reply without the MDPC01 header: %r" % frames[:3])
        return frames[1].decode(), frames[2:]

    def drain(self):
        """Discards replies to earlier requests that are still queued (dealer only)."""
        if self.socket_type != "dealer":
            return
        while self.socket.poll(0, zmq.POLLIN):
            self.socket.recv_multipart()

    def request(self, service, body, timeout_ms=None):
        """Sends body to service and returns the reply body frames, or None on timeout."""
        self.drain()
        self.send(service, body)
        reply = self.recv(timeout_ms)
        if reply is None:
            return None
        return reply[1]

    # -- the suite's envelope --------------------------------------------------

    @staticmethod
    def meta(request_id=None, branch="", deadline_unix_ms=0, caller="e2e"):
        """A crm.v1.RequestMeta with a fresh request id unless one is given."""
        from crm.v1 import common_pb2

        return common_pb2.RequestMeta(
            request_id=str(uuid.uuid4()) if request_id is None else request_id,
            branch=branch,
            deadline_unix_ms=deadline_unix_ms,
            caller=caller,
        )

    @staticmethod
    def parse_reply(frames):
        """Splits a reply body into (crm.v1.Status, response bytes)."""
        from crm.v1 import common_pb2

        if len(frames) != 2:
            raise ProtocolError("reply body has %d frames, not 2 (Status, payload)" % len(frames))
        status = common_pb2.Status()
        status.ParseFromString(frames[0])
        return status, frames[1]

    def send_call(self, service, method, request_msg, meta=None):
        """Sends one request without waiting; returns the RequestMeta (or bytes) sent."""
        if meta is None:
            meta = self.meta()
        self.send(service, [method, meta, request_msg])
        return meta

    def recv_call(self, timeout_ms=None):
        """Waits for one reply to a request; (Status, response bytes) or None on timeout."""
        reply = self.recv(timeout_ms)
        if reply is None:
            return None
        return self.parse_reply(reply[1])

    def call(self, service, method, request_msg, meta=None, timeout_ms=None):
        """Calls method of service with request_msg (a message or raw bytes) and meta (a
        RequestMeta, raw bytes, or None for a fresh request id). Returns (Status, response
        bytes); raises TimeoutError when no reply comes in time."""
        self.drain()
        meta = self.send_call(service, method, request_msg, meta)
        want = meta.request_id if not isinstance(meta, bytes) else None
        deadline = time.monotonic() + (self.timeout_ms if timeout_ms is None else timeout_ms) / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            reply = self.recv_call(max(left, 0))
            if reply is None:
                raise TimeoutError("no reply from %s.%s within the timeout" % (service, method))
            status, payload = reply
            # A late reply to an earlier request that timed out is not ours
            if want and status.request_id and status.request_id != want:
                continue
            return status, payload

    def mmi_service(self, name, timeout_ms=None):
        """Asks the broker whether service name has workers: "200", "404", or None."""
        body = self.request("mmi.service", [name], timeout_ms)
        if body is None:
            return None
        if len(body) != 1:
            raise ProtocolError("mmi.service reply has %d frames, not 1" % len(body))
        return body[0].decode()


def main():
    parser = argparse.ArgumentParser(description="ask the broker's mmi.service about a service")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--timeout", type=int, default=1000, help="milliseconds")
    parser.add_argument("service")
    args = parser.parse_args()
    client = Client(args.endpoint, args.timeout)
    try:
        answer = client.mmi_service(args.service)
    finally:
        client.close()
    if answer is None:
        print("no answer")
        return 2
    print(answer)
    return 0 if answer == "200" else 1


if __name__ == "__main__":
    sys.exit(main())
