"""Atomic file writes share one step: a temporary file beside the target, later renamed over it."""

from __future__ import annotations

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
