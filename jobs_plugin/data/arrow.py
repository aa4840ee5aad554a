"""Apache Arrow (the optional ``arrow`` extra), found and imported on first use: importing
it at start-up costs time and memory a process that never reads or writes a CSV block with
it should not pay."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from types import ModuleType


def available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


@lru_cache(maxsize=1)
def modules() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """``pyarrow``, ``pyarrow.compute``, ``pyarrow.csv`` and ``pyarrow.json``."""
    import pyarrow  # type: ignore[import-untyped]
    import pyarrow.compute  # type: ignore[import-untyped]
    import pyarrow.csv  # type: ignore[import-untyped]
    import pyarrow.json  # type: ignore[import-untyped]

    return pyarrow, pyarrow.compute, pyarrow.csv, pyarrow.json
