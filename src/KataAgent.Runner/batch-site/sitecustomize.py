# kata-runner batch mode: make input() ask the agent through the runner's user input socket.
# The runner puts this directory on PYTHONPATH of batch exec commands and sets _BACKEND_BATCH_MODE=1.
# Protocol (Backend.AI's): connect to the unix socket, read the answer until the runner closes it.
import os
import sys


def _kata_install_batch_input():
    if os.environ.get("_BACKEND_BATCH_MODE", "0") in ("", "0"):
        return
    import builtins
    import socket

    path = os.environ.get("KATA_USER_INPUT_SOCKET", "/tmp/bai-user-input.sock")
    original_input = builtins.input

    def batch_input(prompt=""):
        if prompt:
            sys.stdout.write(str(prompt))
        sys.stdout.flush()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(path)
                chunks = []
                while True:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError:
            # No runner listening (e.g. run by hand): fall back to stdin.
            return original_input()
        return b"".join(chunks).decode("utf-8", "replace")

    builtins.input = batch_input


def _kata_chain_next_sitecustomize():
    # This file shadows any other sitecustomize (the distribution's, the user's): run the next one on sys.path too.
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_kata_install_batch_input()
try:
    _kata_chain_next_sitecustomize()
except Exception as error:  # a broken sitecustomize elsewhere must not stop the user's program
    sys.stderr.write("kata-runner sitecustomize: the next sitecustomize failed: %r\n" % (error,))
