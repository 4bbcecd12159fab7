#!/usr/bin/python3
"""Writes golden/golden.json: name -> hex of what Backend.AI's serializer (the stand-ins in bai/) packs.

Run once with Debian's /usr/bin/python3 (python3-msgpack 1.0.3) from this directory and check the output in:
    PYTHONPATH=bai /usr/bin/python3 make_golden.py
"Packed" cases are packb() of a Python value (both directions are tested in C#). "Crafted" cases are bytes Python
never writes but must read (other temporenc precisions, float 32); for those the JSON also records what the
Python side unpacks them to, so the C# expectations can be checked against it.
"""

import datetime
import json
import os
import sys
import uuid
import zlib
from decimal import Decimal
from pathlib import PosixPath, PurePosixPath

import msgpack

from ai.backend.common.docker import ImageRef
from ai.backend.common.events.event_types.kernel.types import KernelLifecycleEventReason
from ai.backend.common.msgpack import packb, unpackb
from ai.backend.common.typed_validators import AutoDirectoryPath
from ai.backend.common.types import AutoPullBehavior, BinarySize, ClusterMode, ResourceSlot, SessionTypes, SlotTypes

UTC = datetime.timezone.utc
KERNEL_A = uuid.UUID("0b0e3c52-9d1f-4a6e-8f3a-2c5d7e9f1a2b")
KERNEL_B = uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479")
SESSION = uuid.UUID("12345678-9abc-4ef0-8123-456789abcdef")

IMAGE = ImageRef(
    name="python", project="stable", tag="3.11-ubuntu22.04", registry="cr.backend.ai", architecture="x86_64",
    is_local=False,
)


def packed_cases():
    yield "nil", None
    yield "bools", (True, False)
    yield "ints", (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
                   -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63)
    yield "floats", (0.0, 1.5, -2.25, 1e300, 5e-324, float("inf"), float("-inf"))
    yield "str_and_bin", {"str": "h\u00e9llo \u4e16\u754c", "bin": b"\x00\xff\x10", "empty_str": "", "empty_bin": b"",
                          b"bin_key": "value under a bin key", 7: "int key", -3: b"neg"}
    yield "long_str_and_bin", ("x" * 300, bytes(range(256)) * 2, "y" * 70000)
    yield "tuples_and_lists", (1, (2, (3, [4, 5])), [], (), [[None]])
    yield "uuid", KERNEL_A
    yield "uuid_keys", {KERNEL_A: {"kernel": KERNEL_B, "n": 1}, KERNEL_B: None, SESSION: (KERNEL_A,)}
    yield "datetime_utc", datetime.datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    yield "datetime_utc_whole_second", datetime.datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    yield "datetime_plus_0930", datetime.datetime(2025, 1, 1, 8, 0, 0, 500000,
                                                  tzinfo=datetime.timezone(datetime.timedelta(hours=9, minutes=30)))
    yield "datetime_naive", datetime.datetime(2024, 2, 29, 12, 0, 0, 1)
    yield "decimals", (Decimal("1.5"), Decimal("-0.25"), Decimal("8589934592"), Decimal("0"), Decimal("4.00"),
                       Decimal("1E-7"), Decimal("-123.456E-9"))
    yield "paths", (PosixPath("/home/work/a b"), PurePosixPath("relative/\u00fc"), AutoDirectoryPath("/tmp/auto"))
    yield "enums", (SessionTypes.BATCH, ClusterMode.MULTI_NODE, AutoPullBehavior.DIGEST,
                    KernelLifecycleEventReason.USER_REQUESTED, SlotTypes.BYTES)
    yield "image_ref", IMAGE
    yield "image_ref_no_project_local", ImageRef("lablup/custom", None, "latest", "local", "aarch64", True)
    yield "image_ref_empty_strings", ImageRef("", "", "t", "r", "x86_64", False)
    yield "resource_slot", ResourceSlot({"cpu": Decimal("4"), "mem": Decimal("17179869184"),
                                         "cuda.shares": Decimal("0.5")})
    yield "resource_slot_empty", ResourceSlot()
    yield "resource_slot_one", ResourceSlot({"cpu": Decimal("1")})
    yield "binary_sizes", (BinarySize(0), BinarySize(300), BinarySize(70000), BinarySize(1 << 33), BinarySize(-1),
                           BinarySize(2**63 - 1))
    yield "unknown_ext", (msgpack.ExtType(42, b"\x01\x02\x03"), msgpack.ExtType(9, b""),
                          msgpack.ExtType(100, bytes(16)))
    yield "create_kernels_args", create_kernels_args()
    yield "heartbeat", heartbeat()


def create_kernels_args():
    image_config = {
        "canonical": "cr.backend.ai/stable/python:3.11-ubuntu22.04",
        "project": "stable",
        "architecture": "x86_64",
        "digest": "sha256:" + "ab" * 32,
        "repo_digest": None,
        "registry": {"name": "cr.backend.ai", "url": "https://cr.backend.ai", "username": None, "password": None},
        "labels": {"ai.backend.service-ports": "jupyter:http:8081", "ai.backend.features": "batch query uid-match"},
        "is_local": False,
        "auto_pull": AutoPullBehavior.DIGEST,
    }
    config = {
        "image": image_config,
        "kernel_id": str(KERNEL_A),
        "session_id": str(SESSION),
        "owner_user_id": uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
        "owner_project_id": None,
        "network_id": str(SESSION),
        "auto_pull": AutoPullBehavior.DIGEST,
        "session_type": SessionTypes.INTERACTIVE,
        "cluster_mode": ClusterMode.SINGLE_NODE,
        "cluster_role": "main",
        "cluster_idx": 1,
        "cluster_hostname": "main1",
        "local_rank": 0,
        "uid": 1000,
        "main_gid": 1000,
        "supplementary_gids": [],
        "resource_slots": {"cpu": "1", "mem": "1073741824"},
        "resource_opts": {"shmem": "64m"},
        "environ": {"BACKENDAI_SESSION_ID": str(SESSION), "BACKENDAI_CLUSTER_SIZE": "1"},
        "mounts": [],
        "package_directory": (),
        "idle_timeout": 600,
        "bootstrap_script": None,
        "startup_command": None,
        "internal_data": None,
        "preopen_ports": [],
        "allocated_host_ports": [],
        "scaling_group": "default",
        "agent_addr": "tcp://127.0.0.1:6001",
        "endpoint_id": None,
    }
    cluster_info = {
        "mode": ClusterMode.SINGLE_NODE,
        "size": 1,
        "replicas": {"main": 1},
        "network_config": {},
        "ssh_keypair": {"public_key": "ssh-rsa AAAA test", "private_key": "-----BEGIN PRIVATE KEY-----"},
        "cluster_ssh_port_mapping": None,
    }
    return (str(SESSION), [str(KERNEL_A)], [config], cluster_info, {KERNEL_A: IMAGE})


def heartbeat():
    images = zlib.compress(msgpack.packb([["cr.backend.ai/stable/python:3.11-ubuntu22.04", "sha256:" + "cd" * 32]]))
    return ({
        "ip": "127.0.0.1",
        "region": "local",
        "scaling_group": "default",
        "addr": "tcp://127.0.0.1:6011",
        "public_key": None,
        "public_host": "127.0.0.1",
        "available_resource_slots": ResourceSlot({"cpu": Decimal("2"), "mem": Decimal("4294967296")}),
        "slot_key_and_units": {"cpu": SlotTypes.COUNT, "mem": SlotTypes.BYTES},
        "version": "25.15.0",
        "compute_plugins": {"cpu": {"version": "1"}, "mem": {"version": "1"}},
        "images": images,
        "images_opts": {"compression": "zlib"},
        "architecture": "x86_64",
        "auto_terminate_abusing_kernel": False,
        "scratch_disk": BinarySize(10 * 2**30),
        "timestamp": datetime.datetime(2026, 12, 1, 20, 0, 0, 123456, tzinfo=UTC),
    },)


def crafted_cases():
    # Date 2025-03-04 and time 05:06:07 as temporenc's D and T components, then every precision Python reads.
    d = 2025 << 9 | 2 << 5 | 3
    t = 5 << 12 | 6 << 6 | 7
    z = 64 + 4  # +01:00; the stored fields are UTC either way
    yield "temporenc_dt", msgpack.ExtType(2, (d << 17 | t).to_bytes(5, "big"))
    yield "temporenc_dtz", msgpack.ExtType(2, (0b110 << 45 | d << 24 | t << 7 | z).to_bytes(6, "big"))
    yield "temporenc_dts_ms", msgpack.ExtType(2, (0b0100 << 52 | d << 31 | t << 14 | 890 << 4).to_bytes(7, "big"))
    yield "temporenc_dts_ns", msgpack.ExtType(2, (0b0110 << 68 | d << 47 | t << 30 | 890123456).to_bytes(9, "big"))
    yield "temporenc_dts_none", msgpack.ExtType(2, (0b0111 << 44 | d << 23 | t << 6).to_bytes(6, "big"))
    yield "temporenc_dtsz_ms", msgpack.ExtType(2, (0b11100 << 59 | d << 38 | t << 21 | 890 << 11 | z << 4).to_bytes(8, "big"))
    yield "temporenc_dtsz_ns", msgpack.ExtType(2, (0b11110 << 75 | d << 54 | t << 37 | 890123456 << 7 | z).to_bytes(10, "big"))
    yield "temporenc_dtsz_none", msgpack.ExtType(2, (0b11111 << 51 | d << 30 | t << 13 | z << 6).to_bytes(7, "big"))
    yield "float32", b"\xca\x3f\xc0\x00\x00"


def describe(value):
    """A readable rendering of what Python unpacked, kept next to the bytes for reviewers."""
    text = repr(value)
    return text if len(text) <= 400 else text[:400] + "..."


def main():
    out = {"_comment": "Generated by make_golden.py with the Backend.AI stand-ins; do not edit by hand.",
           "python": sys.version.split()[0], "msgpack": ".".join(map(str, msgpack.version)),
           "packed": {}, "crafted": {}}
    for name, value in packed_cases():
        data = packb(value)
        again = unpackb(data)
        # An aware datetime comes back in UTC (temporenc 0.1.0), so a non-UTC one repacks with offset +00:00.
        if name != "datetime_plus_0930":
            assert packb(again) == data, f"{name}: Python does not repack its own output identically"
        out["packed"][name] = {"hex": data.hex(), "python": describe(again)}
    for name, value in crafted_cases():
        data = value if isinstance(value, bytes) else msgpack.packb(value)
        out["crafted"][name] = {"hex": data.hex(), "python": describe(unpackb(data))}
    os.makedirs("golden", exist_ok=True)
    with open("golden/golden.json", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
