"""Persistent Python interpreter driven by kata-runner (query mode).

Started once by the runner as: python3 kata_runner_driver.py CONTROL_IN_FD EVENTS_OUT_FD
Frames on both descriptors are: 1 kind byte, 4-byte big-endian payload length, payload.

runner -> driver (CONTROL_IN_FD):
  r  source text to run          c  completion request (JSON)      i  answer to an input() request
driver -> runner (EVENTS_OUT_FD):
  R  ready (JSON)                o / e  stdout / stderr text (UTF-8)
  w  waiting for input (JSON {"is_password": bool})
  f  run finished (JSON {"exitCode": int})       C  completion result (JSON {"suggestions": [...]})

Python-level writes to sys.stdout/sys.stderr travel as frames, so they stay in order with the
"finished" frame; raw writes to fd 1/2 (subprocesses, C code) go to plain pipes the runner also reads.
Works on Python 3.6+ (Ubuntu 20.04 ships 3.8).
"""
import ast
import builtins
import getpass
import io
import json
import linecache
import os
import re
import rlcompleter
import select
import signal
import struct
import sys
import threading
import time
import traceback

_HEADER = struct.Struct(">cI")


class Channel:
    """Framed pipes to the runner. Frame reads/writes are never torn apart by KeyboardInterrupt."""

    def __init__(self, control_in, events_out):
        self.control_in = control_in
        self.events_out = events_out
        self.in_user_code = False
        self.protected = 0
        self.pending_interrupt = False

    def send(self, kind, payload):
        data = memoryview(_HEADER.pack(kind, len(payload)) + payload)
        self.protected += 1
        try:
            while data:
                data = data[os.write(self.events_out, data):]
        finally:
            self.protected -= 1
        self.raise_pending_interrupt()

    def read_frame(self):
        # Only the wait for the first byte may be interrupted: nothing has been consumed then.
        select.select([self.control_in], [], [])
        self.protected += 1
        try:
            kind, length = _HEADER.unpack(self._read_exact(_HEADER.size))
            payload = self._read_exact(length)
        finally:
            self.protected -= 1
        self.raise_pending_interrupt()
        return kind, payload

    def _read_exact(self, count):
        chunks = []
        while count > 0:
            chunk = os.read(self.control_in, count)
            if not chunk:
                # The runner is gone: nothing left to serve.
                os._exit(0)
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def raise_pending_interrupt(self):
        if self.pending_interrupt and self.in_user_code and self.protected == 0:
            self.pending_interrupt = False
            raise KeyboardInterrupt

    def on_sigint(self, signum, frame):
        if not self.in_user_code:
            return  # an interrupt that arrives between runs is dropped
        if self.protected:
            self.pending_interrupt = True
            return
        raise KeyboardInterrupt


channel = Channel(int(sys.argv[1]), int(sys.argv[2]))


class _BinaryEventStream(io.RawIOBase):
    def __init__(self, kind, fd):
        super().__init__()
        self._kind = kind
        self._fd = fd

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)
        if data:
            channel.send(self._kind, data)
        return len(data)

    def fileno(self):
        return self._fd


class EventStream(io.TextIOBase):
    """sys.stdout / sys.stderr replacement: every write is sent at once (output streams as produced)."""

    def __init__(self, kind, fd, name):
        super().__init__()
        self._kind = kind
        self._fd = fd
        self._name = name
        self._buffer = _BinaryEventStream(kind, fd)

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "backslashreplace"

    @property
    def name(self):
        return self._name

    @property
    def buffer(self):
        return self._buffer

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if text:
            channel.send(self._kind, text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self):
        pass


def request_input(prompt, is_password):
    if prompt:
        sys.stdout.write(str(prompt))
    channel.send(b"w", json.dumps({"is_password": bool(is_password)}).encode())
    while True:
        kind, payload = channel.read_frame()
        if kind == b"i":
            return payload.decode("utf-8", "replace")
        if kind == b"c":
            channel.send(b"C", b'{"suggestions": []}')


class InputStream(io.TextIOBase):
    """sys.stdin replacement: reading a line asks the agent for input."""

    def readable(self):
        return True

    def isatty(self):
        return False

    @property
    def encoding(self):
        return "utf-8"

    def readline(self, size=-1):
        return request_input("", False) + "\n"

    def read(self, size=-1):
        return self.readline()


class Interpreter:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.cell_count = 0

    def run(self, source):
        self.cell_count += 1
        filename = "<cell %d>" % self.cell_count
        # Lets tracebacks show the offending source line.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exit_code = 0
        error = None
        try:
            channel.in_user_code = True
            try:
                self._execute(source, filename)
            finally:
                channel.in_user_code = False
        except SystemExit as exit_request:
            code = exit_request.code
            if code is None:
                exit_code = 0
            elif isinstance(code, int):
                exit_code = code
            else:
                sys.stderr.write(str(code) + "\n")
                exit_code = 1
        except BaseException as caught:  # noqa: B902 - user code may raise anything
            error = caught
        channel.pending_interrupt = False
        if error is not None:
            exit_code = 1
            self._print_traceback(error)
        channel.send(b"f", json.dumps({"exitCode": exit_code}).encode())

    def _execute(self, source, filename):
        tree = ast.parse(source, filename, "exec")
        last_expression = None
        # Like a REPL cell: the value of a trailing expression is displayed.
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last_expression = ast.Interactive(body=[tree.body.pop()])
        exec(compile(tree, filename, "exec"), self.namespace)
        if last_expression is not None:
            exec(compile(last_expression, filename, "single"), self.namespace)

    @staticmethod
    def _print_traceback(error):
        tb = error.__traceback__
        # Hide the driver's own frames: the user sees only their code.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        try:
            traceback.print_exception(type(error), error, tb, file=sys.stderr)
        except Exception:
            sys.stderr.write("%s: %s\n" % (type(error).__name__, error))

    def complete(self, payload):
        suggestions = []
        try:
            request = json.loads(payload.decode("utf-8", "replace") or "{}")
            text = request.get("line") or request.get("code") or ""
            token = re.search(r"[\w.]*$", text).group(0)
            if token:
                completer = rlcompleter.Completer(self.namespace)
                for state in range(500):
                    suggestion = completer.complete(token, state)
                    if suggestion is None:
                        break
                    suggestions.append(suggestion)
        except Exception:
            suggestions = []
        channel.send(b"C", json.dumps({"suggestions": suggestions}).encode())


def watch_runner():
    """If the runner dies without closing our pipes in a way we notice (we may be deep in user code),
    take our process group (the user's subprocesses) down with us instead of lingering as orphans."""
    runner_pid = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != runner_pid:
            try:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            finally:
                os._exit(1)


def main():
    watchdog = threading.Thread(target=watch_runner, name="kata-runner-watchdog")
    watchdog.daemon = True
    watchdog.start()
    signal.signal(signal.SIGINT, channel.on_sigint)
    sys.stdout = EventStream(b"o", 1, "<stdout>")
    sys.stderr = EventStream(b"e", 2, "<stderr>")
    sys.stdin = InputStream()
    builtins.input = lambda prompt="": request_input(prompt, False)
    getpass.getpass = lambda prompt="Password: ", stream=None: request_input(prompt, True)
    # Like an interactive interpreter: imports resolve from the working directory, not the driver's folder.
    sys.path[0] = ""
    interpreter = Interpreter()
    channel.send(b"R", json.dumps({"python": sys.version.split()[0]}).encode())
    while True:
        try:
            kind, payload = channel.read_frame()
        except KeyboardInterrupt:
            continue
        if kind == b"r":
            interpreter.run(payload.decode("utf-8", "replace"))
        elif kind == b"c":
            interpreter.complete(payload)
        # a stray "i" (input nobody asked for) is dropped


if __name__ == "__main__":
    main()
