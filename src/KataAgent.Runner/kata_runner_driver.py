"""Persistent Python interpreter driven by kata-runner (query mode).

Started once by the runner as: python3 kata_runner_driver.py CONTROL_IN_FD EVENTS_OUT_FD
Frames on both descriptors are: 1 kind byte, 4-byte big-endian payload length, payload.

runner -> driver (CONTROL_IN_FD):
  r  source text to run          c  completion request (JSON)      i  answer to an input() request
  E  environment to take on (JSON {"NAME": "value"}; a pool member's tenant arrived)
driver -> runner (EVENTS_OUT_FD):
  R  ready (JSON)                o / e  stdout / stderr text (UTF-8)
  w  waiting for input (JSON {"is_password": bool})
  f  run finished (JSON {"exitCode": int})       C  completion result (JSON {"suggestions": [...]})
  m  media (JSON {"type": mime, "data": str}, at most MAX_MEDIA_PAYLOAD bytes)

Python-level writes to sys.stdout/sys.stderr and media travel as frames, so they stay in order with the
"finished" frame; raw writes to fd 1/2 (subprocesses, C code) go to plain pipes the runner also reads.
Works on Python 3.6+ (Ubuntu 20.04 ships 3.8).
"""
import ast
import base64
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


# --- Rich display (IPython's display protocol) -------------------------------------------------

# The runner's bound for one frame and one agent message (FrameReader.MaxControlPayload): a media
# item is one JSON document and cannot be cut into pieces like text output.
MAX_MEDIA_PAYLOAD = 1024 * 1024

# Richest first, in the order of IPython's formatters. Backend.AI's runner sends the first of them an
# object offers (after dropping text/plain); JupyterLab prefers the same order among these four.
_MEDIA_METHODS = (
    ("text/html", "_repr_html_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
)


def _repr_method(obj, name):
    """obj's bound display method, or None (as IPython: not on classes, not on objects that claim every name)."""
    if isinstance(obj, type):
        return None
    try:
        if getattr(obj, "_kata_display_canary_no_object_has_this_", None) is not None:
            return None
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def _call_repr(obj, name, **kwargs):
    """Calls a display method; a failing one is reported on stderr and skipped, as IPython does."""
    method = _repr_method(obj, name)
    if method is None:
        return None
    try:
        data = method(**kwargs)
    except Exception as error:
        sys.stderr.write("%s.%s() failed: %s: %s\n" % (type(obj).__name__, name, type(error).__name__, error))
        return None
    if isinstance(data, tuple):
        # (data, metadata), as IPython allows
        data = data[0] if data else None
    return data


def _is_matplotlib_figure(obj):
    figure_module = sys.modules.get("matplotlib.figure")
    return figure_module is not None and isinstance(obj, getattr(figure_module, "Figure", ()))


def _figure_png(figure):
    """PNG bytes of a matplotlib figure, as the inline backend renders it; None for an empty figure."""
    if not figure.axes and not getattr(figure, "lines", None):
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight",
                   facecolor=figure.get_facecolor(), edgecolor=figure.get_edgecolor())
    return buffer.getvalue()


def _representations(obj):
    """(mime, data) pairs obj offers, richest first, computed only as far as they are asked for."""
    bundle = _call_repr(obj, "_repr_mimebundle_", include=None, exclude=None)
    if not isinstance(bundle, dict):
        bundle = {}
    for mime, name in _MEDIA_METHODS:
        if mime in bundle:
            data = bundle[mime]
        elif mime == "image/png" and _is_matplotlib_figure(obj):
            data = _figure_png(obj)
        else:
            data = _call_repr(obj, name)
        if data is not None:
            yield mime, data


def _media_payload(mime, data):
    """The media frame's JSON for data, or its size in bytes when that is over MAX_MEDIA_PAYLOAD
    (estimated before anything large is allocated), or None when data is not of a usable type."""
    if mime in ("image/png", "image/jpeg"):
        if isinstance(data, (bytes, bytearray, memoryview)):
            if len(data) * 4 // 3 > MAX_MEDIA_PAYLOAD:
                return len(data) * 4 // 3
            encoded = base64.b64encode(data).decode("ascii")
        elif isinstance(data, str):
            # IPython takes a str from _repr_png_ as base64 already
            if len(data) > MAX_MEDIA_PAYLOAD:
                return len(data)
            encoded = "".join(data.split())
        else:
            return None
        data = "data:%s;base64,%s" % (mime, encoded)
    elif isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", "replace")
    elif not isinstance(data, str):
        return None
    if len(data) > MAX_MEDIA_PAYLOAD:
        return len(data)
    document = {"type": mime, "data": data}
    try:
        payload = json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates: \\u escapes keep the JSON valid
        payload = json.dumps(document).encode("ascii")
    return payload if len(payload) <= MAX_MEDIA_PAYLOAD else len(payload)


def send_media(what, representations):
    """Sends the first representation that fits in one media item. False when none was sent; if one
    was too large, says so on stderr."""
    too_large = None
    for mime, data in representations:
        payload = _media_payload(mime, data)
        if isinstance(payload, bytes):
            channel.send(b"m", payload)
            return True
        if payload is not None and too_large is None:
            too_large = (mime, payload)
    if too_large is not None:
        sys.stderr.write("kata-runner: %s not shown: its %s output is about %d bytes, over the limit of %d bytes "
                         "for one media item\n" % (what, too_large[0], too_large[1], MAX_MEDIA_PAYLOAD))
    return False


def _show(obj):
    if not send_media("a %s" % type(obj).__name__, _representations(obj)):
        sys.stdout.write(repr(obj) + "\n")


def display(*objs, **options):
    """Shows each object like IPython's display(): as a media item when it has a rich representation
    (_repr_html_, _repr_svg_, _repr_png_, _repr_jpeg_, _repr_mimebundle_, matplotlib figures), else its
    repr on stdout. raw=True takes each object as a mime bundle {mime: data}. IPython's other options
    (include, exclude, metadata, display_id, ...) are accepted and ignored."""
    raw = options.get("raw", False)
    for obj in objs:
        if raw and isinstance(obj, dict):
            representations = [(mime, obj[mime]) for mime, _ in _MEDIA_METHODS if mime in obj]
            if not send_media("a mime bundle", representations) and "text/plain" in obj:
                sys.stdout.write(str(obj["text/plain"]) + "\n")
        else:
            _show(obj)


def displayhook(value):
    """sys.displayhook for a cell's trailing expression: rich objects become media, the rest print their repr."""
    if value is None:
        return
    builtins._ = None
    _show(value)
    builtins._ = value


# --- matplotlib: figures show inline, like IPython's inline backend --------------------------------
# The driver sets MPLBACKEND=Agg (unless set) and never imports matplotlib itself: when user code
# imports pyplot, its show() is replaced, and after each run the open figures are sent and closed.


def _uses_agg(pyplot):
    try:
        return str(pyplot.get_backend()).lower() == "agg"
    except Exception:
        return False


def show_open_figures(pyplot=None):
    """Sends every open pyplot figure as a PNG media item, then closes them all (when the backend is Agg)."""
    pyplot = pyplot or sys.modules.get("matplotlib.pyplot")
    if pyplot is None or not _uses_agg(pyplot) or not pyplot.get_fignums():
        return
    try:
        from matplotlib._pylab_helpers import Gcf
        figures = [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]
        for number, figure in enumerate(figures, 1):
            png = _figure_png(figure)
            if png is not None:
                send_media("figure %d" % number, [("image/png", png)])
    finally:
        pyplot.close("all")


def _install_inline_show(pyplot):
    original = getattr(pyplot, "show", None)
    if original is None or getattr(original, "_kata_inline", False):
        return

    def show(*args, **kwargs):
        if not _uses_agg(pyplot):
            return original(*args, **kwargs)
        show_open_figures(pyplot)

    show._kata_inline = True
    show.__doc__ = original.__doc__
    pyplot.show = show


def _route_ipython_display(module):
    # Without an IPython shell, IPython's display() only prints; `from IPython.display import display`
    # must show media here as the builtin does. (__dict__: IPython 8's core.display warns on attribute access
    # and hands out display_functions' display, which is patched.)
    if callable(module.__dict__.get("display")):
        module.display = display


# Modules patched right after they load (the hook imports nothing itself).
_PATCH_AFTER_LOAD = {
    "matplotlib.pyplot": _install_inline_show,
    "IPython.core.display_functions": _route_ipython_display,
    "IPython.core.display": _route_ipython_display,
    "IPython.display": _route_ipython_display,
}


class _PatchingLoader:
    """Loads a module with its own loader, then patches it."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class PatchingImportHook:
    """A meta path finder that wraps the loaders of the modules in _PATCH_AFTER_LOAD and finds nothing else."""

    def find_spec(self, fullname, path, target=None):
        patch = _PATCH_AFTER_LOAD.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None

    def invalidate_caches(self):
        pass


def after_run_figures():
    """After a run: an inline show() on a pyplot that came in another way, then the open figures."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        _install_inline_show(pyplot)
        show_open_figures(pyplot)


class Interpreter:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.cell_count = 0

    def run(self, source):
        self.cell_count += 1
        filename = "<cell %d>" % self.cell_count
        # Lets tracebacks show the offending source line.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exit_code = self._run_user_code(lambda: self._execute(source, filename))
        if "matplotlib.pyplot" in sys.modules:
            # Like IPython's inline backend: after every cell, a failed one too, the open figures are shown.
            # Rendering runs user code (artists), so it can fail and be interrupted like the cell.
            figures_exit_code = self._run_user_code(after_run_figures)
            exit_code = exit_code or figures_exit_code
        channel.send(b"f", json.dumps({"exitCode": exit_code}).encode())

    def _run_user_code(self, action):
        """Runs action as user code (interruptible); returns its exit code, a traceback on stderr if it raised."""
        exit_code = 0
        error = None
        try:
            channel.in_user_code = True
            try:
                action()
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
        return exit_code

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
        try:
            report = traceback.TracebackException(type(error), error, error.__traceback__)
            # Hide the driver's own frames (also those between the cell and a failing __repr__): the user sees only their code.
            report.stack = traceback.StackSummary.from_list(
                [frame for frame in report.stack if frame.filename != __file__])
            sys.stderr.write("".join(report.format()))
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


def take_environment(payload):
    """The tenant of a pool member that started this interpreter before it came: its environment, from now on."""
    try:
        environ = json.loads(payload.decode("utf-8"))
    except ValueError:
        return
    if not isinstance(environ, dict):
        return
    for name, value in environ.items():
        if isinstance(name, str) and isinstance(value, str):
            os.environ[name] = value
    if "TZ" in environ and hasattr(time, "tzset"):
        time.tzset()


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
    builtins.display = display
    sys.displayhook = displayhook
    # Figures render off-screen (also in the user's subprocesses); pyplot's show() sends them as media,
    # and IPython.display's display() is ours.
    if not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = "Agg"
    sys.meta_path.insert(0, PatchingImportHook())
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
        elif kind == b"E":
            take_environment(payload)
        # a stray "i" (input nobody asked for) is dropped


if __name__ == "__main__":
    main()
