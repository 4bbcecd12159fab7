"""Stand-ins for the Backend.AI classes that travel pickled inside msgpack.

Only what decides the pickled bytes is reproduced: the module and class names, the base classes and the
instance attributes (dict or slots). Behaviour beyond construction is left out on purpose.
"""

import enum
from collections import UserDict


def _pickle_by_value(self, proto):
    # Python 3.12+ (Backend.AI runs 3.13) pickles an enum member as EnumClass(value); 3.11 would write
    # getattr(EnumClass, name). The stand-ins pin the 3.12+ form so the golden bytes match the real manager.
    return self.__class__, (self._value_,)


class CIStrEnum(enum.StrEnum):
    """StrEnum whose lookup by value ignores case."""

    __reduce_ex__ = _pickle_by_value

    @classmethod
    def _missing_(cls, value):
        wanted = str(value).lower()
        for member in cls:
            if member.value.lower() == wanted:
                return member
        return None


class SessionTypes(CIStrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"
    INFERENCE = "inference"
    SYSTEM = "system"


class ClusterMode(enum.StrEnum):
    __reduce_ex__ = _pickle_by_value

    SINGLE_NODE = "single-node"
    MULTI_NODE = "multi-node"


class AutoPullBehavior(enum.StrEnum):
    __reduce_ex__ = _pickle_by_value

    DIGEST = "digest"
    TAG = "tag"
    NONE = "none"


class SlotTypes(enum.StrEnum):
    __reduce_ex__ = _pickle_by_value

    COUNT = "count"
    BYTES = "bytes"
    UNIQUE = "unique"


class KernelLifecycleStatus(enum.StrEnum):
    __reduce_ex__ = _pickle_by_value

    PREPARING = "preparing"
    RUNNING = "running"
    TERMINATING = "terminating"


class BinarySize(int):
    """A byte count; an int subclass without slots, like the real one."""


class ResourceSlot(UserDict):
    """Slot name -> Decimal; keeps its mapping in the 'data' slot, like the real one."""

    __slots__ = ("data",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
