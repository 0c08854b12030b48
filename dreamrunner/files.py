"""File helpers every stage shares: atomic writes (a temporary file beside the target, renamed over it),
clean-up of the temporaries a killed writer leaves, content hashes, and reading a user's text files in
whatever encoding they came in."""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TextIO

from .errors import DreamRunnerError

_log = logging.getLogger(__name__)

# The demo story and clip catalog, inside the package so an installed copy has them too (package data).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# A temporary whose writer is gone (or that is this old) is an orphan: a write takes seconds, not an hour.
STALE_TEMPORARY_SECONDS = 3600.0


def temporary_beside(path: Path, suffix: str) -> Path:
    """Create an empty temporary file next to `path`, with the permissions a plain open() would give it.

    mkstemp makes files 0600; the renamed file must not end up less readable than any other file the user
    writes (a project shared with a colleague, an exported video), so apply the umask like open() does.
    The name is `.<name>.<pid>.<random><suffix>`: the writer's pid tells `remove_stale_temporaries` whether
    the write may still be under way.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except (OSError, OverflowError):
        return False
    return True


def remove_stale_temporaries(path: Path, suffix: str = ".tmp", max_age: float = STALE_TEMPORARY_SECONDS) -> list[Path]:
    """Delete the temporaries `temporary_beside(path, suffix)` made that no write will rename any more.

    A temporary is stale when the process named in it is gone (killed mid-write), or when it is older
    than `max_age` seconds (a reused pid, another machine on a shared disk, a name from before pids were
    recorded). A live writer's fresh temporary is left alone, so this is safe while another process saves.
    Returns the paths removed; files that vanish meanwhile or cannot be removed are skipped.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?[A-Za-z0-9_]+{re.escape(suffix)}$")
    removed = []
    try:
        candidates = [entry for entry in os.scandir(path.parent) if entry.name.startswith(f".{path.name}.")]
    except OSError:
        return removed
    now = time.time()
    for entry in candidates:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = match.group(1)
        if age < max_age and (pid is None or _process_alive(int(pid))):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


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


class TextFileError(DreamRunnerError):
    """A user's text file that cannot be read, or is in no encoding `text_encoding` knows."""


_CHUNK = 1 << 20


def text_encoding(path: str | os.PathLike) -> str:
    """The encoding a user's text file (a caption, a catalog table, a plan file) is read in: "utf-16" when it
    starts with a UTF-16 byte-order mark (Windows Notepad's "Unicode"), "utf-8-sig" when it is UTF-8 (a BOM,
    if any, is dropped), else "cp1252" (Windows-1252, what Windows editors write for Western languages),
    logged as a warning naming the file. Reads the file once in 1 MiB chunks (memory does not grow with it).
    Raises `TextFileError` for a file that cannot be read or is none of these."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                return "utf-16"
            handle.seek(0)
            decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
            try:
                while chunk := handle.read(_CHUNK):
                    decoder.decode(chunk)
                    offset += len(chunk)
                decoder.decode(b"", final=True)
                return "utf-8-sig"
            except UnicodeDecodeError as error:
                where = offset + error.start
            handle.seek(0)
            try:
                while chunk := handle.read(_CHUNK):  # one byte per character: chunks never split one
                    chunk.decode("cp1252")
            except UnicodeDecodeError:
                raise TextFileError(f"{path} is neither UTF-8 nor Windows-1252 text (from about byte {where}); "
                                    "save it as UTF-8") from None
    except OSError as error:
        raise TextFileError(f"cannot read {path}: {error.strerror or error}") from None
    _log.warning("%s is not UTF-8 (from about byte %d); read it as Windows-1252: save it as UTF-8 if its "
                 "accented letters or quotes look wrong", path, where)
    return "cp1252"


def open_text_file(path: str | os.PathLike) -> TextIO:
    """A user's text file open for reading in its encoding (`text_encoding`), lines split on \\n, \\r\\n
    and \\r only and kept as written (newline=""): never on U+2028 or U+0085, which a JSON string may
    hold as they are (str.splitlines splits on them). Raises `TextFileError`."""
    encoding = text_encoding(path)
    try:
        return open(path, encoding=encoding, newline="")
    except OSError as error:
        raise TextFileError(f"cannot read {path}: {error.strerror or error}") from None


def read_text_file(path: str | os.PathLike) -> str:
    """The whole text of a user's text file, decoded as `open_text_file` does. Raises `TextFileError`."""
    with open_text_file(path) as handle:
        return handle.read()
