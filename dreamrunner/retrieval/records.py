"""One clip of a caption catalog, and the errors the retrieval stage raises."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import DreamRunnerError
from ..video_io import VideoFileError


class CatalogError(DreamRunnerError):
    """A catalog file or folder that cannot be read, or a record that breaks the catalog's rules."""


# A clip whose video cannot be opened or decoded (the shared reader's error, audio-only files included);
# retrieval drops it with this reason.
UnreadableVideo = VideoFileError


@dataclass(frozen=True, slots=True)
class ClipRecord:
    """A captioned clip: a whole video file or the [start, end) seconds of one, local path or URL.

    Attributes the source does not state (fps, size, even duration for InternVid) stay None until the
    video is probed; filters judge only what is known.
    """

    id: str
    caption: str
    source: str
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise CatalogError("a clip record needs a non-empty id")
        if not self.caption or not self.caption.strip():
            raise CatalogError(f"clip {self.id!r} has an empty caption")
        if not self.source:
            raise CatalogError(f"clip {self.id!r} has no source path or URL")
        for name in ("start", "end", "duration", "fps"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise CatalogError(f"clip {self.id!r}: {name} = {value} must be a finite number >= 0")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise CatalogError(f"clip {self.id!r}: end {self.end} must be after start {self.start}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise CatalogError(f"clip {self.id!r}: {name} = {value} must be positive")
        if self.duration is None and self.start is not None and self.end is not None:
            object.__setattr__(self, "duration", self.end - self.start)

    @property
    def is_remote(self) -> bool:
        return "://" in self.source and not self.source.startswith("file://")

    @property
    def aspect(self) -> float | None:
        return self.width / self.height if self.width and self.height else None
