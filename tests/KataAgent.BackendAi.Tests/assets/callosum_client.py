#!/usr/bin/python3
"""The manager's side of Callosum RPC (DEALER), for testing the C# agent's RPC server.

Speaks what Callosum 1.0.x puts on the wire (read from its source, written from scratch): PING/PONG handshake,
[b"UPPER", header, body] messages, header {type, meth, okey, seq, zip}, body {meta, body} (snappy when zip).
Runs with Debian's /usr/bin/python3 (pyzmq, msgpack); no python-snappy there, so the snappy block format is
implemented below.

Library use: CallosumClient(endpoint).connect(); client.invoke("ping", ["hi"]).
Test-driver use: `callosum_client.py --endpoint tcp://127.0.0.1:PORT --jsonl` reads one JSON command per line on
stdin and writes one JSON answer per line on stdout (see `serve_jsonl`). Values in JSON use {"$bin": base64} for
bytes, {"$uuid": "..."} for UUIDs (Backend.AI serializer only) and {"$tuple": [...]}; order keys are
{"str": text}, {"bin": hex} or null.
"""

import argparse
import base64
import json
import sys
import time
import uuid

import msgpack
import zmq

FUNCTION, RESULT, FAILURE, ERROR, CANCEL, CANCELLED = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {0: "NULL", 1: "FUNCTION", 2: "RESULT", 3: "FAILURE", 4: "ERROR", 5: "CANCEL", 6: "CANCELLED"}


class HandshakeError(Exception):
    pass


class RPCUserError(Exception):
    """FAILURE: the handler raised (name, repr, traceback)."""

    def __init__(self, name, repr_, traceback):
        super().__init__(name, repr_, traceback)
        self.name, self.repr, self.traceback = name, repr_, traceback


class RPCInternalError(RPCUserError):
    """ERROR: the server itself failed."""


class RPCCancelled(Exception):
    """CANCELLED: the server cancelled the call."""


class RPCTimeout(Exception):
    pass


def _mpackb(value):
    return msgpack.packb(value, use_bin_type=True)


def _munpackb(data):
    return msgpack.unpackb(data, raw=False, use_list=False)


def load_serializer(kind):
    """("plain" | "bai" | "auto") -> (name, packb, unpackb) for FUNCTION/RESULT bodies."""
    if kind in ("bai", "auto"):
        try:
            from ai.backend.common import msgpack as bai_msgpack  # PYTHONPATH=assets/bai

            return "bai", bai_msgpack.packb, bai_msgpack.unpackb
        except ImportError:
            if kind == "bai":
                raise
    return "plain", (lambda v: msgpack.packb(v, use_bin_type=True)), (lambda b: msgpack.unpackb(b, raw=False))


# ---- snappy block format (what python-snappy's compress/decompress use) ----

def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def snappy_compress(data):
    """Greedy compressor with literals and 2-byte-offset copies; valid snappy, not a fast one."""
    out = bytearray(_varint(len(data)))
    table = {}
    i, literal_start, n = 0, 0, len(data)

    def emit_literal(start, end):
        while start < end:
            chunk = min(end - start, 65536)
            length = chunk - 1
            if length < 60:
                out.append(length << 2)
            elif length < 256:
                out.extend((60 << 2, length))
            else:
                out.extend((61 << 2, length & 0xFF, length >> 8))
            out.extend(data[start:start + chunk])
            start += chunk

    while i + 4 <= n:
        key = data[i:i + 4]
        candidate = table.get(key)
        table[key] = i
        if candidate is not None and i - candidate <= 65535:
            length = 4
            while i + length < n and length < 64 and data[candidate + length] == data[i + length]:
                length += 1
            emit_literal(literal_start, i)
            offset = i - candidate
            out.extend((((length - 1) << 2) | 2, offset & 0xFF, offset >> 8))
            i += length
            literal_start = i
        else:
            i += 1
    emit_literal(literal_start, n)
    return bytes(out)


def snappy_decompress(data):
    n, shift, pos = 0, 0, 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            length += 1
            out.extend(data[pos:pos + length])
            pos += length
            continue
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        for _ in range(length):
            out.append(out[-offset])
    if len(out) != n:
        raise ValueError("snappy: length mismatch")
    return bytes(out)


# ---- the client ----

class Reply:
    def __init__(self, header_raw, body_raw, unpackb):
        self.header_raw, self.body_raw = header_raw, body_raw
        self.header = _munpackb(header_raw)
        self.type = self.header["type"]
        data = body_raw
        if self.header["zip"]:
            data = snappy_decompress(data)
        self.data = _munpackb(data)
        self.meta_raw = self.data["meta"]
        self.meta = _munpackb(self.meta_raw) if self.meta_raw else None
        raw_body = self.data["body"]
        self.body = unpackb(raw_body) if self.type in (FUNCTION, RESULT) else raw_body

    @property
    def request_id(self):
        return (self.header["meth"], self.header["okey"], self.header["seq"])


class CallosumClient:
    def __init__(self, endpoint, serializer="auto", server_public_key=None, client_keypair=None):
        self.endpoint = endpoint
        self.serializer_name, self.packb, self.unpackb = load_serializer(serializer)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 100)
        if server_public_key is not None:
            public, secret = client_keypair if client_keypair else zmq.curve_keypair()
            self.sock.curve_serverkey = server_public_key
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
            self.sock.zap_domain = b"local"
        self.seq = 0
        self.pending = {}  # replies that arrived while waiting for another request id

    def connect(self, handshake_timeout=5.0):
        self.sock.connect(self.endpoint)
        self.handshake(handshake_timeout)

    def handshake(self, timeout=5.0):
        self.sock.send_multipart([b"PING", b"", b""])
        deadline = time.monotonic() + timeout
        while True:
            frames = self._recv(deadline)
            if frames is None:
                raise HandshakeError(f"no PONG from {self.endpoint} within {timeout} s")
            if frames[0] == b"PONG":
                return frames
            self._stash(frames)

    def ping_frames(self, f2, f3, timeout=5.0):
        self.sock.send_multipart([b"PING", f2, f3])
        deadline = time.monotonic() + timeout
        while True:
            frames = self._recv(deadline)
            if frames is None:
                raise RPCTimeout("no PONG")
            if frames[0] == b"PONG":
                return frames
            self._stash(frames)

    def send_function(self, method, args=(), kwargs=None, okey="", zip=False, seq=None, body=None):
        if seq is None:
            seq = self.seq
            self.seq = (self.seq + 1) % (2 ** 32)
        document = self.packb({"args": list(args), "kwargs": kwargs or {}}) if body is None else body
        self._send(FUNCTION, method, okey, seq, b"", document, zip)
        return (method, okey, seq)

    def cancel(self, method, okey, seq):
        self._send(CANCEL, method, okey, seq, _mpackb([]), None, False)

    def _send(self, msgtype, method, okey, seq, meta, body, zip):
        header = _mpackb({"type": msgtype, "meth": method, "okey": okey, "seq": seq, "zip": zip})
        data = _mpackb({"meta": meta, "body": body})
        if zip:
            data = snappy_compress(data)
        self.sock.send_multipart([b"UPPER", header, data])

    def send_raw(self, frames):
        self.sock.send_multipart(frames)

    def wait_reply(self, request_id=None, timeout=30.0):
        """The next reply (or the one for request_id); None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if request_id is None and self.pending:
                return self.pending.pop(next(iter(self.pending)))
            if request_id is not None and request_id in self.pending:
                return self.pending.pop(request_id)
            frames = self._recv(deadline)
            if frames is None:
                return None
            self._stash(frames)

    def invoke(self, method, args=(), kwargs=None, okey="", zip=False, timeout=30.0):
        request_id = self.send_function(method, args, kwargs, okey, zip)
        reply = self.wait_reply(request_id, timeout)
        if reply is None:
            self.cancel(*request_id)  # as Callosum does on invoke timeout
            raise RPCTimeout(f"{method}: no reply within {timeout} s")
        return result_of(reply)

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.sock.poll(int(remaining * 1000)):
            return None
        return self.sock.recv_multipart()

    def _stash(self, frames):
        if len(frames) == 3 and frames[0] == b"UPPER":
            reply = Reply(frames[1], frames[2], self.unpackb)
            self.pending[_hashable(reply.request_id)] = reply

    def close(self):
        self.sock.close()
        self.ctx.term()


def _hashable(request_id):
    return request_id


def result_of(reply):
    if reply.type == RESULT:
        return reply.body
    if reply.type == FAILURE:
        raise RPCUserError(*reply.meta)
    if reply.type == ERROR:
        raise RPCInternalError(*reply.meta)
    if reply.type == CANCELLED:
        raise RPCCancelled()
    raise ValueError(f"unexpected reply type {reply.type}")


# ---- JSON-lines driver ----

def from_json(value):
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return base64.b64decode(value["$bin"])
        if set(value) == {"$uuid"}:
            return uuid.UUID(value["$uuid"])
        if set(value) == {"$tuple"}:
            return tuple(from_json(v) for v in value["$tuple"])
        return {k: from_json(v) for k, v in value.items()}
    return value


def to_json(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bin": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"$repr": repr(value)}


def okey_from_json(value):
    if value is None:
        return None
    if "str" in value:
        return value["str"]
    return bytes.fromhex(value["bin"])


def okey_to_json(okey):
    if okey is None:
        return None
    if isinstance(okey, str):
        return {"str": okey}
    if isinstance(okey, bytes):
        return {"bin": okey.hex()}
    return {"other": repr(okey)}


def describe(reply):
    out = {
        "type": reply.type,
        "type_name": TYPE_NAMES.get(reply.type, "?"),
        "meth": reply.header["meth"],
        "okey": okey_to_json(reply.header["okey"]),
        "seq": reply.header["seq"],
        "zip": reply.header["zip"],
        "header_keys": sorted(reply.header),
        "meta_hex": bytes(reply.meta_raw).hex() if isinstance(reply.meta_raw, bytes) else None,
        "meta": to_json(reply.meta),
    }
    if reply.type == RESULT:
        out["result"] = to_json(reply.body)
    elif reply.type in (FAILURE, ERROR):
        out["name"], out["repr"], out["traceback"] = reply.meta
    out["body_is_nil"] = reply.data["body"] is None
    return out


def serve_jsonl(client):
    """Commands (JSON objects, one per line; every answer echoes "id" when given):
    {"op": "handshake", "timeout": s}                       -> {"ok": true} | {"ok": false, "error"}
    {"op": "ping_frames", "f2": hex, "f3": hex}             -> {"frames": [hex, ...]}
    {"op": "send", "method", "args", "kwargs", "okey", "zip", "seq"?, "body_hex"?} -> {"seq": n}
    {"op": "recv", "timeout": s, "method"?, "okey"?, "seq"?} -> reply description | {"timeout": true}
    {"op": "invoke", ... as send, "timeout": s}             -> reply description | {"timeout": true}
    {"op": "cancel", "method", "okey", "seq"}               -> {"ok": true}
    {"op": "raw", "frames": [hex, ...]}                     -> {"ok": true}
    {"op": "close"}                                         -> {"ok": true}, then exit
    """
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        op = command["op"]
        try:
            answer = run_command(client, op, command)
        except Exception as e:  # noqa: BLE001 - reported to the driver
            answer = {"exception": type(e).__name__, "message": str(e)}
        if "id" in command:
            answer["id"] = command["id"]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if op == "close":
            return


def run_command(client, op, command):
    if op == "handshake":
        try:
            client.handshake(command.get("timeout", 5.0))
            return {"ok": True}
        except HandshakeError as e:
            return {"ok": False, "error": str(e)}
    if op == "ping_frames":
        frames = client.ping_frames(bytes.fromhex(command["f2"]), bytes.fromhex(command["f3"]), command.get("timeout", 5.0))
        return {"frames": [f.hex() for f in frames]}
    if op in ("send", "invoke"):
        okey = okey_from_json(command.get("okey", {"str": ""}))
        body = bytes.fromhex(command["body_hex"]) if "body_hex" in command else None
        request_id = client.send_function(command["method"], from_json(command.get("args", [])),
                                          from_json(command.get("kwargs", {})), okey, command.get("zip", False),
                                          command.get("seq"), body)
        if op == "send":
            return {"seq": request_id[2]}
        reply = client.wait_reply(request_id, command.get("timeout", 30.0))
        return {"timeout": True} if reply is None else describe(reply)
    if op == "recv":
        request_id = None
        if "seq" in command:
            request_id = (command["method"], okey_from_json(command.get("okey", {"str": ""})), command["seq"])
        reply = client.wait_reply(request_id, command.get("timeout", 30.0))
        return {"timeout": True} if reply is None else describe(reply)
    if op == "cancel":
        client.cancel(command["method"], okey_from_json(command.get("okey", {"str": ""})), command["seq"])
        return {"ok": True}
    if op == "raw":
        client.send_raw([bytes.fromhex(f) for f in command["frames"]])
        return {"ok": True}
    if op == "close":
        client.close()
        return {"ok": True}
    raise ValueError(f"unknown op {op}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--serializer", choices=("plain", "bai", "auto"), default="auto")
    parser.add_argument("--server-public-key", help="Z85 agent public key: connect with CURVE")
    parser.add_argument("--client-public-key", help="Z85 (with --client-secret-key); default: a fresh key pair")
    parser.add_argument("--client-secret-key")
    parser.add_argument("--handshake-timeout", type=float, default=5.0)
    parser.add_argument("--jsonl", action="store_true", help="JSON-lines command mode on stdin/stdout")
    parser.add_argument("--call", help="one-shot: invoke METHOD with --args JSON and print the result")
    parser.add_argument("--args", default="[]")
    options = parser.parse_args()

    keypair = None
    if options.client_public_key:
        keypair = (options.client_public_key.encode(), options.client_secret_key.encode())
    client = CallosumClient(options.endpoint, options.serializer,
                            options.server_public_key.encode() if options.server_public_key else None, keypair)
    client.sock.connect(options.endpoint)
    if options.jsonl:
        sys.stdout.write(json.dumps({"ready": True, "serializer": client.serializer_name}) + "\n")
        sys.stdout.flush()
        serve_jsonl(client)
        return 0
    client.handshake(options.handshake_timeout)
    if options.call:
        print(json.dumps(to_json(client.invoke(options.call, from_json(json.loads(options.args))))))
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
