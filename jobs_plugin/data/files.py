"""File bytes: a local folder (default ``$PREFECT_JOBS_HOME/files``) or any fsspec URL.

Bytes are written under a temporary name and moved into place when complete, so a reader
never sees half a file; keys are the file ids, so nothing depends on user-chosen names.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from jobs_plugin.settings import get_settings

COPY_CHUNK = 1 << 20


def files_url() -> str:
    settings = get_settings()
    return settings.files_url or str(settings.home_path / "files")


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_root(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser()


def _fs(url: str) -> tuple[Any, str]:
    import fsspec  # type: ignore[import-untyped]

    fs, root = fsspec.core.url_to_fs(url)
    return fs, str(root).rstrip("/")


@contextlib.contextmanager
def open_write(key: str) -> Iterator[IO[bytes]]:
    """A binary stream that becomes the bytes of ``key`` when the block ends without error."""
    url = files_url()
    if _is_local(url):
        folder = _local_root(url)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
            os.replace(tmp, folder / key)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    fs, root = _fs(url)
    part = f"{root}/.{key}.part"
    try:
        with fs.open(part, "wb") as fh:
            yield fh
        fs.mv(part, f"{root}/{key}")
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(part)
        raise


def open_read(key: str) -> IO[bytes]:
    """The stored bytes of ``key`` as a seekable binary stream (close it)."""
    url = files_url()
    if _is_local(url):
        return open(_local_root(url) / key, "rb")
    fs, root = _fs(url)
    stream: IO[bytes] = fs.open(f"{root}/{key}", "rb")
    return stream


def iter_bytes(key: str, chunk: int = COPY_CHUNK) -> Iterator[bytes]:
    with open_read(key) as fh:
        while block := fh.read(chunk):
            yield block


def remove(key: str) -> None:
    url = files_url()
    if _is_local(url):
        with contextlib.suppress(FileNotFoundError):
            (_local_root(url) / key).unlink()
        return
    fs, root = _fs(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"{root}/{key}")


def size_of(key: str) -> int:
    url = files_url()
    if _is_local(url):
        return (_local_root(url) / key).stat().st_size
    fs, root = _fs(url)
    return int(fs.size(f"{root}/{key}"))
