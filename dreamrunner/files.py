"""File helpers every stage shares: atomic writes (a temporary file beside the target, renamed over it) and
content hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def temporary_beside(path: Path, suffix: str) -> Path:
    """Create an empty temporary file next to `path`, with the permissions a plain open() would give it.

    mkstemp makes files 0600; the renamed file must not end up less readable than any other file the user
    writes (a project shared with a colleague, an exported video), so apply the umask like open() does.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    return Path(name)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash at any point leaves the old or the new file, never a torn one."""
    temporary = temporary_beside(path, ".tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime) so unchanged files are read once."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _file_hashes:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _file_hashes[memo] = digest.hexdigest()
    return _file_hashes[memo]
