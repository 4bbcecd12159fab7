#!/usr/bin/env python3
"""A tiny stand-in for an image's own kernel runner (stdlib only: no pyzmq).

It speaks just enough ZMTP 3.0 with the NULL mechanism (no CURVE) to be driven by the agent like Backend.AI's
runner: PULL bound on 2000 (the agent's requests), PUSH bound on 2001 (the answers). Every message is two frames,
[type, payload]. It answers:
  status -> msgpack {"started_at": <float>}
  code   -> exec() in one persistent namespace; its stdout as "stdout", a traceback as "stderr", then
            "finished" {"exitCode": 0 or 1}
  get-apps -> the JSON given with --apps-result '<json>' (as "apps-result"); without that option it is not answered
Anything else (complete, start-service, ...) is logged and left unanswered, like an old runner.
Like Backend.AI's runner it also sends a log line as "stderr" outside any run (before each status answer); the
agent's client must not let it leak into a run's output. (A log line sent between runs at any other time could not be
told apart from the next run's stderr: the wire has no run id, and Backend.AI's runner's log lines reach users so too.)
Used by the agent's tests (image's-own-runner mode).
"""
import contextlib
import io
import json
import socket
import struct
import sys
import threading
import time
import traceback

REPL_IN, REPL_OUT = 2000, 2001
STARTED_AT = time.time()
APPS_RESULT = sys.argv[sys.argv.index("--apps-result") + 1] if "--apps-result" in sys.argv[:-1] else None

out_lock = threading.Lock()
out_peers = []  # connected PULL peers of our PUSH socket; the newest gets each message
namespace = {"__name__": "__main__"}


def log(*args):
    print("zmtp-null-runner:", *args, file=sys.stderr, flush=True)


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def greeting():
    # signature (0xFF, 8 padding bytes, 0x7F), version 3.0, mechanism "NULL" padded to 20, as-server 0, filler 31
    return b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


def frame(body, more=False, command=False):
    flags = (0x01 if more else 0) | (0x04 if command else 0)
    if len(body) > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def ready_command(socket_type):
    name, value = b"Socket-Type", socket_type.encode()
    body = bytes([5]) + b"READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return frame(body, command=True)


def read_frame(conn):
    flags = recv_exact(conn, 1)[0]
    size = struct.unpack(">Q", recv_exact(conn, 8))[0] if flags & 0x02 else recv_exact(conn, 1)[0]
    return flags, recv_exact(conn, size)


def handshake(conn, socket_type):
    conn.sendall(greeting())
    peer = recv_exact(conn, 64)
    if peer[0] != 0xFF or peer[9] != 0x7F or peer[10] < 3 or peer[12:16] != b"NULL":
        raise ConnectionError("not a ZMTP 3 NULL peer: %r" % peer[:16])
    conn.sendall(ready_command(socket_type))
    flags, body = read_frame(conn)
    if not flags & 0x04 or body[1:1 + body[0]] != b"READY":
        raise ConnectionError("expected READY, got %r" % body[:16])


def read_message(conn):
    """The next message's frames; commands in between (PING) are answered or skipped."""
    frames = []
    while True:
        flags, body = read_frame(conn)
        if flags & 0x04:
            if body[1:1 + body[0]] == b"PING":
                # PONG echoes the ping's context (after the 2-byte TTL)
                with out_lock:
                    conn.sendall(frame(bytes([4]) + b"PONG" + body[1 + body[0] + 2:], command=True))
            continue
        frames.append(body)
        if not flags & 0x01:
            return frames


def send(msg_type, payload):
    data = frame(msg_type.encode(), more=True) + frame(payload)
    with out_lock:
        while out_peers:
            conn = out_peers[-1]
            try:
                conn.sendall(data)
                return
            except OSError:
                out_peers.pop()
                conn.close()
    log("no agent connected to send", msg_type)


def status_payload():
    # msgpack: fixmap(1) {fixstr(10) "started_at": float64}
    return bytes([0x81, 0xA0 | 10]) + b"started_at" + b"\xcb" + struct.pack(">d", STARTED_AT)


def run_code(code):
    stdout, stderr = io.StringIO(), io.StringIO()
    exit_code = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            exec(compile(code, "<code>", "exec"), namespace)
        except BaseException:  # noqa: B036 - the user's code may raise anything
            traceback.print_exc()
            exit_code = 1
    if stdout.getvalue():
        send("stdout", stdout.getvalue().encode())
    if stderr.getvalue():
        send("stderr", stderr.getvalue().encode())
    send("finished", json.dumps({"exitCode": exit_code}).encode())


def serve_requests(conn):
    try:
        handshake(conn, "PULL")
        while True:
            frames = read_message(conn)
            if len(frames) != 2:
                log("ignoring a message of", len(frames), "frames")
                continue
            msg_type, payload = frames[0].decode(), frames[1]
            if msg_type == "status":
                send("stderr", b"INFO ai.backend.kernel: status requested\n")
                send("status", status_payload())
            elif msg_type == "code":
                run_code(payload.decode())
            elif msg_type == "get-apps" and APPS_RESULT is not None:
                send("apps-result", APPS_RESULT.encode())
            else:
                log("not answering", msg_type)
    except (ConnectionError, OSError) as e:
        log("request connection ended:", e)
    finally:
        conn.close()


def accept_answers(conn):
    try:
        handshake(conn, "PUSH")
    except (ConnectionError, OSError) as e:
        log("answer connection failed:", e)
        conn.close()
        return
    with out_lock:
        out_peers.append(conn)
    # A PULL peer sends nothing after the handshake: reading only tells when it goes away.
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    with out_lock:
        if conn in out_peers:
            out_peers.remove(conn)
    conn.close()


def listen(port, handler):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(16)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def main():
    threading.Thread(target=listen, args=(REPL_OUT, accept_answers), daemon=True).start()
    log("serving: PULL on %d, PUSH on %d, NULL mechanism, argv %r" % (REPL_IN, REPL_OUT, sys.argv[1:]))
    listen(REPL_IN, serve_requests)


if __name__ == "__main__":
    main()
