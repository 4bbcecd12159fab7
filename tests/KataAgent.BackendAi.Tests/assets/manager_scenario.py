#!/usr/bin/python3
"""What a Backend.AI 25.15 manager does with an agent, played against a running agent through its RPC port.

Calls go through callosum_client.CallosumClient with Backend.AI's serializer (the stand-ins under assets/bai, CPython's
own pickle for the ext types); events are read from the manager's Redis stream (db 4, key "events") and their args
decoded with Backend.AI's unpackb, as the manager's event dispatcher does.

Usage: manager_scenario.py --endpoint tcp://127.0.0.1:PORT --redis 127.0.0.1:PORT --agent-id ID --image CANONICAL
       [--transcript FILE]
Writes a human-readable transcript (each call, its result abbreviated, each event read) to FILE or stderr, and one
JSON summary on stdout: {"steps": {name: {"ok": bool, ...facts}}, "ok": bool}. Every step runs even when an earlier
one failed, so the summary says which parts work.
"""

import argparse
import io
import json
import sys
import tarfile
import time
import traceback
import uuid
from decimal import Decimal

import redis

from ai.backend.common import msgpack as bai_msgpack
from ai.backend.common.docker import ImageRef
from ai.backend.common.types import AutoPullBehavior, ClusterMode, ResourceSlot, SessionTypes
from callosum_client import CallosumClient, RPCUserError

CALL_TIMEOUT = 180.0
EVENT_TIMEOUT = 90.0


class Scenario:
    def __init__(self, options, out):
        self.options = options
        self.out = out
        self.client = CallosumClient(options.endpoint, serializer="bai")
        host, port = options.redis.rsplit(":", 1)
        self.redis = redis.Redis(host=host, port=int(port), db=4, password=options.redis_password)
        self.steps = {}
        self.seen_ids = set()
        self.started = time.monotonic()

    # ---- transcript ----

    def say(self, text):
        self.out.write(f"[{time.monotonic() - self.started:7.2f}s] {text}\n")
        self.out.flush()

    @staticmethod
    def short(value, limit=300):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"

    # ---- calls and events ----

    def call(self, method, *args):
        self.say(f">>> {method}({', '.join(self.short(a, 160) for a in args)})")
        try:
            result = self.client.invoke(method, args, timeout=CALL_TIMEOUT)
        except RPCUserError as e:
            self.say(f"<<< {method} FAILURE {e.name}: {e.repr}")
            raise
        self.say(f"<<< {method} -> {self.short(result)}")
        self.show_new_events()
        return result

    def show_new_events(self):
        """Puts every stream entry not shown yet in the transcript (heartbeats by name only)."""
        for entry_id, name, source, args in self.events():
            if entry_id in self.seen_ids:
                continue
            self.seen_ids.add(entry_id)
            shown = "" if name in ("agent_heartbeat", "agent_status_heartbeat") else f" args={self.short(args)}"
            self.say(f"    event {entry_id} {name} source={source}{shown}")

    def events(self):
        """Every entry of the stream so far: (id, name, source, decoded args)."""
        entries = []
        for entry_id, fields in self.redis.xrange("events"):
            args = bai_msgpack.unpackb(fields[b"args"])
            entries.append((entry_id.decode(), fields[b"name"].decode(), fields[b"source"].decode(), args))
        return entries

    def wait_event(self, name, match=lambda args: True, timeout=EVENT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for entry_id, event_name, source, args in self.events():
                if event_name == name and match(args):
                    self.show_new_events()
                    return source, args
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} event in the stream within {timeout} s")
            time.sleep(0.2)

    def step(self, name, function):
        self.say(f"--- {name}")
        try:
            facts = function() or {}
            self.steps[name] = {"ok": True, **facts}
        except Exception as e:  # noqa: BLE001 - recorded in the summary, the scenario goes on
            self.say(f"!!! {name} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            self.steps[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}

    # ---- the manager's values ----

    def image_config(self):
        # ImageConfig as the manager builds it (registry, labels, digest, auto_pull as the pickled enum).
        return {
            "canonical": self.options.image,
            "project": None,
            "architecture": "x86_64",
            "digest": "sha256:" + "0" * 64,
            "repo_digest": None,
            "registry": {"name": "local", "url": "http://localhost", "username": None, "password": None},
            "labels": {"ai.backend.kernelspec": "1", "ai.backend.features": "query batch uid-match",
                       "ai.backend.base-distro": "debian", "ai.backend.runtime-type": "python",
                       "ai.backend.runtime-path": "/usr/local/bin/python"},
            "is_local": True,
            "auto_pull": AutoPullBehavior.DIGEST,
        }

    def kernel_creation_config(self, session_id, kernel_id):
        return {
            "image": self.image_config(),
            "kernel_id": kernel_id,
            "session_id": session_id,
            "owner_user_id": str(uuid.uuid4()),
            "owner_project_id": None,
            "network_id": session_id,
            "auto_pull": AutoPullBehavior.DIGEST,
            "session_type": SessionTypes.INTERACTIVE,
            "cluster_mode": ClusterMode.SINGLE_NODE,
            "cluster_role": "main",
            "cluster_idx": 1,
            "cluster_hostname": "main1",
            "local_rank": 0,
            "uid": None,
            "main_gid": None,
            "supplementary_gids": [],
            "resource_slots": {"cpu": "0.5", "mem": "536870912"},
            "resource_opts": {},
            "environ": {"BACKENDAI_SESSION_ID": session_id, "GREETING": "hello from the manager"},
            "mounts": [],
            "package_directory": (),
            "idle_timeout": 600,
            "bootstrap_script": None,
            "startup_command": None,
            "internal_data": None,
            "preopen_ports": [],
            "allocated_host_ports": [],
            "scaling_group": "default",
            "agent_addr": self.options.endpoint,
            "endpoint_id": None,
        }

    def execute(self, run_id, mode, code, opts=None, flush_timeout=2.0):
        return self.call("execute", self.session_id, self.kernel_id, 4, run_id, mode, code, opts or {}, flush_timeout)

    def run_to_end(self, run_id, mode, code, opts=None, flush_timeout=2.0, deadline_seconds=120):
        """One execute, then 'continue' while it says 'continued' (a slow first run on a busy host outlasts the
        flush timeout), as the manager's client does; the last result with all the console output."""
        result = self.execute(run_id, mode, code, opts, flush_timeout)
        console = list(result.get("console", ()))
        deadline = time.monotonic() + deadline_seconds
        while result["status"] == "continued" and time.monotonic() < deadline:
            result = self.execute(run_id, "continue", "", None, flush_timeout)
            console += list(result.get("console", ()))
        return dict(result, console=tuple(console))

    @staticmethod
    def stdout_of(result):
        return "".join(text for kind, text in result.get("console", ()) if kind == "stdout")

    # ---- the scenario ----

    def run(self):
        self.session_id = str(uuid.uuid4())
        self.kernel_id = str(uuid.uuid4())
        self.step("handshake", self.handshake)
        self.step("ping", self.ping)
        self.step("check_and_pull", self.check_and_pull)
        self.step("create_kernels", self.create_kernels)
        self.step("execute_query_state", self.execute_query_state)
        self.step("execute_batch", self.execute_batch)
        self.step("execute_continue", self.execute_continue)
        self.step("execute_input", self.execute_input)
        self.step("files", self.files)
        self.step("get_logs", self.get_logs)
        self.step("destroy_kernel", self.destroy_kernel)
        self.step("sync_kernel_registry_unknown", self.sync_unknown)
        self.step("heartbeat", self.heartbeat)
        self.client.close()
        return {"ok": all(s["ok"] for s in self.steps.values()), "steps": self.steps,
                "session_id": self.session_id, "kernel_id": self.kernel_id}

    def handshake(self):
        self.client.connect(handshake_timeout=30.0)
        self.say(f"PING/PONG with {self.options.endpoint}")
        _, args = self.wait_event("agent_started")
        return {"agent_started": list(args)}

    def ping(self):
        answer = self.call("ping", "hello agent")
        assert answer == "hello agent", answer
        return {"answer": answer}

    def check_and_pull(self):
        canonical = self.options.image
        tasks = self.call("check_and_pull", {canonical: self.image_config()})
        task_id = tasks[canonical]
        assert isinstance(task_id, str) and task_id, tasks
        source, args = self.wait_event("image_pull_finished", lambda a: a[0] == canonical)
        assert source == self.options.agent_id, source
        assert args[1] == self.options.agent_id, args
        return {"task_id": task_id, "event_msg": args[3] if len(args) > 3 else None}

    def create_kernels(self):
        config = self.kernel_creation_config(self.session_id, self.kernel_id)
        cluster_info = {"mode": ClusterMode.SINGLE_NODE, "size": 1, "replicas": {"main": 1}, "network_config": {},
                        "ssh_keypair": None, "cluster_ssh_port_mapping": None}
        image_refs = {uuid.UUID(self.kernel_id): ImageRef(self.options.image, None, "latest", "local", "x86_64", True)}
        results = self.call("create_kernels", self.session_id, [self.kernel_id], [config], cluster_info, image_refs)
        (info,) = results
        assert info["id"] == self.kernel_id, info
        for key in ("repl_in_port", "repl_out_port", "container_id", "resource_spec", "kernel_host", "service_ports"):
            assert key in info, f"creation result lacks {key}"
        _, args = self.wait_event("kernel_started", lambda a: a[0] == self.kernel_id)
        kernel_id, session_id, reason, creation_info = args[:4]
        assert session_id == self.session_id, args
        assert creation_info["repl_in_port"] == info["repl_in_port"], creation_info
        assert creation_info["container_id"] == info["container_id"], creation_info
        names = [name for _, name, _, a in self.events() if a and a[0] == self.kernel_id]
        return {"creation_info_keys": sorted(creation_info), "kernel_events": names,
                "kernel_host": creation_info["kernel_host"], "repl_in_port": creation_info["repl_in_port"],
                "resource_slots": creation_info["resource_spec"]["slots"]}

    def execute_query_state(self):
        first = self.run_to_end("q1", "query", "x = 41")
        assert first["status"] == "finished", first
        second = self.run_to_end("q2", "query", "print(x + 1)")
        assert second["status"] == "finished", second
        greeting = self.run_to_end("q3", "query", "import os; print(os.environ['GREETING'])")
        return {"first_status": first["status"], "second_stdout": self.stdout_of(second),
                "environ_stdout": self.stdout_of(greeting)}

    def execute_batch(self):
        # As the manager's session runner: a batch run goes through its steps (clean, build, exec), one continue each.
        result = self.execute("b1", "batch", "", {"exec": "echo from-batch; exit 3"}, None)
        statuses = [result["status"]]
        text = self.stdout_of(result)
        while result["status"] in ("clean-finished", "build-finished", "continued") and len(statuses) < 20:
            result = self.execute("b1", "continue", "", None, None)
            statuses.append(result["status"])
            text += self.stdout_of(result)
        assert result["status"] == "finished", result
        return {"statuses": statuses, "exit_code": result.get("exitCode"), "stdout": text}

    def execute_continue(self):
        first = self.execute("c1", "query", "import time\nprint('before', flush=True)\ntime.sleep(4)\nprint('after')", None, 0.5)
        statuses = [first["status"]]
        text = self.stdout_of(first)
        deadline = time.monotonic() + 60
        result = first
        while result["status"] == "continued" and time.monotonic() < deadline:
            result = self.execute("c1", "continue", "", None, 2.0)
            statuses.append(result["status"])
            text += self.stdout_of(result)
        assert statuses[-1] == "finished", statuses
        return {"statuses": statuses, "stdout": text}

    def execute_input(self):
        asking = self.run_to_end("i1", "query", "name = input('who? ')\nprint('hello', name)", None, 10.0)
        answered = self.run_to_end("i1", "input", "bob", None, 10.0)
        return {"first_status": asking["status"], "second_status": answered["status"],
                "stdout": self.stdout_of(answered)}

    def files(self):
        content = b"print('uploaded')\n"
        self.call("upload_file", self.kernel_id, "src/hello.py", content)
        self.call("upload_file", self.kernel_id, "src/data.bin", bytes([0, 1, 2, 255]))
        listing = self.call("list_files", self.kernel_id, "src")
        names = sorted(entry["filename"] for entry in json.loads(listing["files"]))
        tar_bytes = self.call("download_file", self.kernel_id, "src")
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
        self.say(f"    tar members: {sorted(members)}")
        single = self.call("download_single", self.kernel_id, "src/data.bin")
        run = self.run_to_end("f1", "query", "exec(open('/home/work/src/hello.py').read())")
        return {"abspath": listing["abspath"], "listed": names,
                "tar_members": sorted(members), "tar_hello_matches": members.get("src/hello.py") == content,
                "single": list(single), "ran_upload": self.stdout_of(run)}

    def get_logs(self):
        logs = self.call("get_logs", self.kernel_id)
        assert isinstance(logs["logs"], str), logs
        return {"logs_type": type(logs["logs"]).__name__, "logs_length": len(logs["logs"])}

    def destroy_kernel(self):
        self.call("destroy_kernel", self.kernel_id, self.session_id, "user-requested", False)
        _, args = self.wait_event("kernel_terminated", lambda a: a[0] == self.kernel_id)
        return {"terminated": list(args)}

    def sync_unknown(self):
        unknown_kernel, unknown_session = str(uuid.uuid4()), str(uuid.uuid4())
        result = self.call("sync_kernel_registry", [(unknown_kernel, unknown_session)])
        _, args = self.wait_event("kernel_terminated", lambda a: a[0] == unknown_kernel)
        return {"result": result, "terminated": list(args), "unknown_kernel": unknown_kernel,
                "unknown_session": unknown_session}

    def heartbeat(self):
        source, (info,) = self.wait_event("agent_heartbeat")
        self.say(f"    agent_heartbeat decoded: {self.short(info, 1200)}")
        slots = info["available_resource_slots"]
        assert type(slots) is ResourceSlot, type(slots)
        assert all(type(v) is Decimal for v in slots.values()), slots
        units = info["slot_key_and_units"]
        return {"source": source, "addr": info["addr"], "slots_type": type(slots).__name__,
                "slot_value_types": sorted({type(v).__name__ for v in slots.values()}),
                "slots": {k: str(v) for k, v in slots.items()}, "units": {k: str(v) for k, v in units.items()},
                "architecture": info["architecture"], "scaling_group": info["scaling_group"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--redis", required=True, help="host:port of the manager's Redis")
    parser.add_argument("--redis-password")
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--image", required=True, help="the image canonical present on the agent")
    parser.add_argument("--transcript", help="file for the transcript (default: stderr)")
    options = parser.parse_args()
    out = open(options.transcript, "w", encoding="utf-8") if options.transcript else sys.stderr
    try:
        summary = Scenario(options, out).run()
    finally:
        if out is not sys.stderr:
            out.close()
    print(json.dumps(summary, default=repr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
