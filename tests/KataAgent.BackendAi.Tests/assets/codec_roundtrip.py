#!/usr/bin/python3
"""Live peer for the C# codec: reads one packb() map {name: value} on stdin, unpacks it with the Backend.AI
stand-ins, checks each value's Python types, and writes {name: packb(value)} (or {"error": text}) on stdout.
Run with PYTHONPATH=<assets>/bai and /usr/bin/python3."""

import datetime
import enum
import sys
import uuid
from decimal import Decimal
from pathlib import PosixPath, PurePosixPath

import msgpack

from ai.backend.common.docker import ImageRef
from ai.backend.common.events.event_types.kernel.types import KernelLifecycleEventReason
from ai.backend.common.msgpack import packb, unpackb
from ai.backend.common.typed_validators import AutoDirectoryPath
from ai.backend.common.types import BinarySize, ClusterMode, ResourceSlot, SessionTypes


def check(name, value):
    """Raises AssertionError when a value did not arrive as the Python type Backend.AI would see."""
    if name == "resource_slot":
        assert type(value) is ResourceSlot, type(value)
        assert all(type(v) is Decimal for v in value.values()), value
        assert value == ResourceSlot({"cpu": Decimal("4"), "mem": Decimal("17179869184"), "cuda.shares": Decimal("0.5")})
    elif name == "uuid":
        assert type(value) is uuid.UUID and value == uuid.UUID("0b0e3c52-9d1f-4a6e-8f3a-2c5d7e9f1a2b"), value
    elif name == "uuid_keys":
        assert all(type(k) is uuid.UUID for k in value), value
    elif name == "enums":
        assert value[0] is SessionTypes.BATCH and value[1] is ClusterMode.MULTI_NODE, value
        assert value[3] is KernelLifecycleEventReason.USER_REQUESTED, value
        assert all(isinstance(v, enum.Enum) for v in value), value
    elif name == "decimals":
        assert all(type(v) is Decimal for v in value), value
        assert str(value[4]) == "4.00" and str(value[5]) == "1E-7", value
    elif name == "image_ref_no_project_local":
        assert type(value) is ImageRef and value.project is None and value.is_local is True, value
    elif name == "binary_sizes":
        assert all(type(v) is BinarySize for v in value) and value[3] == 1 << 33, value
    elif name == "datetime_utc":
        assert type(value) is datetime.datetime and value.utcoffset() == datetime.timedelta(0), value
        assert value == datetime.datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=datetime.timezone.utc), value
    elif name == "datetime_naive":
        assert type(value) is datetime.datetime and value.tzinfo is None, value
    elif name == "paths":
        assert type(value[0]) is PosixPath and type(value[1]) is PurePosixPath and type(value[2]) is AutoDirectoryPath, value
    elif name == "str_and_bin":
        assert type(value["str"]) is str and type(value["bin"]) is bytes and value[b"bin_key"] == "value under a bin key", value
    elif name == "ints":
        assert value[12] == 2**64 - 1 and value[-1] == -2**63, value
    elif name == "unknown_ext":
        assert value[0] == msgpack.ExtType(42, b"\x01\x02\x03"), value
    elif name == "heartbeat":
        slots = value[0]["available_resource_slots"]
        assert type(slots) is ResourceSlot and all(type(v) is Decimal for v in slots.values()), slots
    elif name == "create_kernels_args":
        config = value[2][0]
        assert config["session_type"] is SessionTypes.INTERACTIVE, config["session_type"]
        assert type(value[4][uuid.UUID("0b0e3c52-9d1f-4a6e-8f3a-2c5d7e9f1a2b")]) is ImageRef, value[4]


def main():
    try:
        cases = unpackb(sys.stdin.buffer.read())
        out = {}
        for name, value in cases.items():
            check(name, value)
            out[name] = packb(value)
    except Exception as e:  # the C# side shows this text in the failure
        out = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.buffer.write(msgpack.packb(out, use_bin_type=True))


if __name__ == "__main__":
    main()
