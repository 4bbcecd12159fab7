"""Stand-in for ai.backend.common.docker.ImageRef: a plain dataclass with the same fields in the same order."""

from dataclasses import dataclass


@dataclass
class ImageRef:
    name: str
    project: str | None
    tag: str
    registry: str
    architecture: str
    is_local: bool
