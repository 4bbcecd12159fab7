"""Stand-in for ai.backend.common.msgpack: packb/unpackb with Backend.AI's options and ext codes.

Runs under Debian's /usr/bin/python3 with only python3-msgpack installed. When the `temporenc` package is
missing, a small built-in codec reproduces what temporenc 0.1.0 does for datetimes: an aware value is converted
to UTC and written as DTSZ with microsecond precision, a naive one as DTS with microsecond precision; decoding
gives an aware UTC datetime for the zoned types and a naive one otherwise.
"""

import datetime
import enum
import os
import pickle
import uuid
from decimal import Decimal
from pathlib import PosixPath, PurePosixPath

import msgpack as _msgpack

from .docker import ImageRef
from .typed_validators import AutoDirectoryPath
from .types import BinarySize, ResourceSlot

__all__ = ("packb", "unpackb", "temporenc_packb", "temporenc_unpackb")

EXT_UUID = 1
EXT_DATETIME = 2
EXT_DECIMAL = 3
EXT_POSIX_PATH = 4
EXT_PURE_POSIX_PATH = 5
EXT_ENUM = 6
EXT_IMAGE_REF = 7
EXT_RESOURCE_SLOT = 8
EXT_BINARY_SIZE = 16
EXT_AUTO_DIRECTORY_PATH = 17

_PICKLE_PROTOCOL = 5


def _fields_of(value: datetime.datetime):
    return (value.year - 0, value.month - 1, value.day - 1, value.hour, value.minute, value.second)


def _temporenc_packb(value: datetime.datetime) -> bytes:
    offset = value.utcoffset()
    if offset is not None:
        value = value - offset
        minutes = offset.days * 1440 + offset.seconds // 60
        quarter, rest = divmod(minutes, 15)
        if rest:
            raise ValueError("time zone offset must be a multiple of 15 minutes")
        zone = quarter + 64
    year, month, day, hour, minute, second = _fields_of(value)
    date_bits = year << 9 | month << 5 | day
    time_bits = hour << 12 | minute << 6 | second
    if offset is None:
        # DTS, microsecond precision: 01 01 D(21) T(17) S(20) 00
        word = 0b0101 << 60 | date_bits << 39 | time_bits << 22 | value.microsecond << 2
        return word.to_bytes(8, "big")
    # DTSZ, microsecond precision: 111 01 D(21) T(17) S(20) Z(7) 00
    word = 0b11101 << 67 | date_bits << 46 | time_bits << 29 | value.microsecond << 9 | zone << 2
    return word.to_bytes(9, "big")


def _temporenc_unpackb(data: bytes) -> datetime.datetime:
    if not data:
        raise ValueError("empty temporenc value")
    first = data[0]
    zone = None
    nanos = 0
    if first >> 6 == 0b00:  # DT
        _expect(data, 5)
        word = int.from_bytes(data, "big")
        date_bits, time_bits = word >> 17, word
    elif first >> 5 == 0b110:  # DTZ
        _expect(data, 6)
        word = int.from_bytes(data, "big")
        date_bits, time_bits, zone = word >> 24, word >> 7, word & 0x7F
    elif first >> 6 == 0b01:  # DTS
        precision = first >> 4 & 0b11
        size = {0: 7, 1: 8, 2: 9, 3: 6}[precision]
        _expect(data, size)
        word = int.from_bytes(data, "big")
        sub_bits = {0: 10 + 4, 1: 20 + 2, 2: 30, 3: 6}[precision]
        head = word >> sub_bits
        date_bits, time_bits = head >> 17, head
        if precision == 0:
            nanos = (word >> 4 & 0x3FF) * 1_000_000
        elif precision == 1:
            nanos = (word >> 2 & 0xFFFFF) * 1_000
        elif precision == 2:
            nanos = word & 0x3FFFFFFF
    elif first >> 5 == 0b111:  # DTSZ
        precision = first >> 3 & 0b11
        size = {0: 8, 1: 9, 2: 10, 3: 7}[precision]
        _expect(data, size)
        word = int.from_bytes(data, "big")
        tail_bits = {0: 10 + 7 + 4, 1: 20 + 7 + 2, 2: 30 + 7, 3: 7 + 6}[precision]
        head = word >> tail_bits
        date_bits, time_bits = head >> 17, head
        if precision == 0:
            nanos, zone = (word >> 11 & 0x3FF) * 1_000_000, word >> 4 & 0x7F
        elif precision == 1:
            nanos, zone = (word >> 9 & 0xFFFFF) * 1_000, word >> 2 & 0x7F
        elif precision == 2:
            nanos, zone = (word >> 7 & 0x3FFFFFFF), word & 0x7F
        else:
            zone = word >> 6 & 0x7F
    else:
        raise ValueError(f"temporenc type tag {first:#04x} is not a date and time")
    date_bits &= 0x1FFFFF
    time_bits &= 0x1FFFF
    tz = datetime.timezone.utc if zone is not None and zone != 127 else None
    return datetime.datetime(
        date_bits >> 9 & 0xFFF,
        (date_bits >> 5 & 0xF) + 1,
        (date_bits & 0x1F) + 1,
        time_bits >> 12 & 0x1F,
        time_bits >> 6 & 0x3F,
        time_bits & 0x3F,
        nanos // 1000,
        tzinfo=tz,
    )


def _expect(data: bytes, size: int) -> None:
    if len(data) != size:
        raise ValueError(f"temporenc value must be {size} bytes; got {len(data)}")


try:  # the real package wins when it is installed
    import temporenc as _temporenc

    def temporenc_packb(value):
        return _temporenc.packb(value)

    def temporenc_unpackb(data):
        return _temporenc.unpackb(data).datetime()

except ImportError:
    temporenc_packb = _temporenc_packb
    temporenc_unpackb = _temporenc_unpackb


def _default(obj):
    match obj:
        case tuple():
            return list(obj)
        case uuid.UUID():
            return _msgpack.ExtType(EXT_UUID, obj.bytes)
        case datetime.datetime():
            return _msgpack.ExtType(EXT_DATETIME, temporenc_packb(obj))
        case BinarySize():
            return _msgpack.ExtType(EXT_BINARY_SIZE, pickle.dumps(obj, protocol=_PICKLE_PROTOCOL))
        case Decimal():
            return _msgpack.ExtType(EXT_DECIMAL, pickle.dumps(obj, protocol=_PICKLE_PROTOCOL))
        case PosixPath():
            return _msgpack.ExtType(EXT_POSIX_PATH, os.fsencode(obj))
        case PurePosixPath():
            return _msgpack.ExtType(EXT_PURE_POSIX_PATH, os.fsencode(obj))
        case AutoDirectoryPath():
            return _msgpack.ExtType(EXT_AUTO_DIRECTORY_PATH, os.fsencode(obj))
        case ResourceSlot():
            return _msgpack.ExtType(EXT_RESOURCE_SLOT, pickle.dumps(obj, protocol=_PICKLE_PROTOCOL))
        case enum.Enum():
            return _msgpack.ExtType(EXT_ENUM, pickle.dumps(obj, protocol=_PICKLE_PROTOCOL))
        case ImageRef():
            return _msgpack.ExtType(EXT_IMAGE_REF, pickle.dumps(obj, protocol=_PICKLE_PROTOCOL))
    raise TypeError(f"Unknown type: {obj!r} ({type(obj)})")


_EXT_DECODERS = {
    EXT_UUID: lambda data: uuid.UUID(bytes=data),
    EXT_DATETIME: lambda data: temporenc_unpackb(data),
    EXT_DECIMAL: pickle.loads,
    EXT_POSIX_PATH: lambda data: PosixPath(os.fsdecode(data)),
    EXT_PURE_POSIX_PATH: lambda data: PurePosixPath(os.fsdecode(data)),
    EXT_AUTO_DIRECTORY_PATH: lambda data: AutoDirectoryPath(os.fsdecode(data)),
    EXT_ENUM: pickle.loads,
    EXT_RESOURCE_SLOT: pickle.loads,
    EXT_BINARY_SIZE: pickle.loads,
    EXT_IMAGE_REF: pickle.loads,
}


def _ext_hook(code: int, data: bytes):
    decoder = _EXT_DECODERS.get(code)
    if decoder is None:
        return _msgpack.ExtType(code, data)
    return decoder(data)


def packb(data, **kwargs) -> bytes:
    opts = {"use_bin_type": True, "strict_types": True, "default": _default, **kwargs}
    return _msgpack.packb(data, **opts) or b""


def unpackb(packed: bytes, **kwargs):
    opts = {"raw": False, "strict_map_key": False, "use_list": False, "ext_hook": _ext_hook, **kwargs}
    return _msgpack.unpackb(packed, **opts)
