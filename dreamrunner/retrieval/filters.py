"""Attribute filters: duration, resolution, aspect ratio, frame rate. Unknown attributes pass until probed."""

from __future__ import annotations

from pydantic import Field

from ..story import Checked

from .records import ClipRecord


class ClipFilter(Checked):
    """Bounds a clip must meet; None = no bound. Defaults suit CogVideoX motion priors (49 frames at 8 fps
    need about 6 s; shorter clips still train, so the floor is 1 s)."""


    min_duration: float | None = Field(default=1.0, ge=0)
    max_duration: float | None = Field(default=None, ge=0)
    min_width: int | None = Field(default=None, ge=1)
    min_height: int | None = Field(default=None, ge=1)
    min_aspect: float | None = Field(default=None, gt=0)  # width / height
    max_aspect: float | None = Field(default=None, gt=0)
    min_fps: float | None = Field(default=None, gt=0)
    max_fps: float | None = Field(default=None, gt=0)

    def check(self, record: ClipRecord) -> str | None:
        """The first bound the record breaks, as a reason; None if it meets every bound it can be judged on."""
        d, fps, aspect = record.duration, record.fps, record.aspect
        if d is not None and self.min_duration is not None and d < self.min_duration:
            return f"duration {d:.2f} s is shorter than {self.min_duration:g} s"
        if d is not None and self.max_duration is not None and d > self.max_duration:
            return f"duration {d:.2f} s is longer than {self.max_duration:g} s"
        if record.width is not None and self.min_width is not None and record.width < self.min_width:
            return f"width {record.width} px is below {self.min_width} px"
        if record.height is not None and self.min_height is not None and record.height < self.min_height:
            return f"height {record.height} px is below {self.min_height} px"
        if aspect is not None and self.min_aspect is not None and aspect < self.min_aspect:
            return f"aspect {aspect:.2f} is narrower than {self.min_aspect:g}"
        if aspect is not None and self.max_aspect is not None and aspect > self.max_aspect:
            return f"aspect {aspect:.2f} is wider than {self.max_aspect:g}"
        if fps is not None and self.min_fps is not None and fps < self.min_fps:
            return f"{fps:g} fps is below {self.min_fps:g} fps"
        if fps is not None and self.max_fps is not None and fps > self.max_fps:
            return f"{fps:g} fps is above {self.max_fps:g} fps"
        return None
