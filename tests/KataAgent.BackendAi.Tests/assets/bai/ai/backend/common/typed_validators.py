"""Stand-in for ai.backend.common.typed_validators.AutoDirectoryPath (ext 17 carries only its path bytes)."""

import os


class AutoDirectoryPath(os.PathLike):
    def __init__(self, path) -> None:
        self._path = os.fsdecode(path)

    def __fspath__(self) -> str:
        return self._path

    def __eq__(self, other) -> bool:
        return isinstance(other, AutoDirectoryPath) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)

    def __repr__(self) -> str:
        return f"AutoDirectoryPath({self._path!r})"
