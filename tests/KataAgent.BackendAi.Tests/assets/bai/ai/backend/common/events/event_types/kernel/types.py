"""Stand-in for the kernel lifecycle event reasons (a subset of the members; pickles carry only the value)."""

import enum

from ....types import _pickle_by_value


class KernelLifecycleEventReason(enum.StrEnum):
    __reduce_ex__ = _pickle_by_value

    AGENT_TERMINATION = "agent-termination"
    ALREADY_TERMINATED = "already-terminated"
    FAILED_TO_CREATE = "failed-to-create"
    FAILED_TO_START = "failed-to-start"
    IDLE_TIMEOUT = "idle-timeout"
    SELF_TERMINATED = "self-terminated"
    TASK_FINISHED = "task-finished"
    UNKNOWN = "unknown"
    USER_REQUESTED = "user-requested"
