"""An IoU tracker and the segmenter that cuts a clip to where its subject is tracked and large enough."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .detection import Detection, Detector


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    observations: list[tuple[int, Detection]] = field(default_factory=list)  # (frame index, detection)
    missed: int = 0

    @property
    def last(self) -> Detection:
        return self.observations[-1][1]


class IouTracker:
    """Greedy IoU association frame to frame (highest IoU pairs first); a track survives `max_missed`
    frames without a match before it ends."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 1) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self._active: list[Track] = []
        self._frame = -1

    def update(self, detections: list[Detection]) -> None:
        self._frame += 1
        pairs = sorted(((iou(t.last.box, d.box), ti, di) for ti, t in enumerate(self._active)
                        for di, d in enumerate(detections)), reverse=True)
        used_tracks, used_detections = set(), set()
        for overlap, ti, di in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in used_tracks or di in used_detections:
                continue
            used_tracks.add(ti)
            used_detections.add(di)
            self._active[ti].observations.append((self._frame, detections[di]))
            self._active[ti].missed = 0
        for ti, track in enumerate(self._active):
            if ti not in used_tracks:
                track.missed += 1
        self._active = [t for t in self._active if t.missed <= self.max_missed]
        for di, detection in enumerate(detections):
            if di not in used_detections:
                track = Track(id=len(self.tracks), observations=[(self._frame, detection)])
                self.tracks.append(track)
                self._active.append(track)


@dataclass(frozen=True)
class Segment:
    """The span [start, end) seconds of a clip where one subject is tracked; `boxes` are its (time, box)."""

    start: float
    end: float
    track_id: int
    boxes: tuple[tuple[float, tuple[float, float, float, float]], ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


class Segmenter:
    """Finds the longest span where one track is present in consecutive sampled frames (gaps of at most
    `max_gap` frames bridged) with its box covering at least `min_area` of the frame."""

    def __init__(self, detector: Detector, min_area: float = 0.02, min_duration: float = 1.0,
                 max_gap: int = 1, iou_threshold: float = 0.3) -> None:
        self.detector = detector
        self.min_area = min_area
        self.min_duration = min_duration
        self.max_gap = max_gap
        self.iou_threshold = iou_threshold

    def segment(self, times: np.ndarray, frames: list[np.ndarray]) -> tuple[Segment | None, str]:
        """(segment, "") or (None, the reason no span qualifies)."""
        if len(frames) == 0:
            return None, "no frames"
        self.detector.reset()
        if hasattr(self.detector, "fit"):
            self.detector.fit(frames)
        tracker = IouTracker(self.iou_threshold, max_missed=self.max_gap)
        for frame in frames:
            tracker.update([d for d in self.detector.detect(frame) if d.area >= self.min_area])
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        best: Segment | None = None
        for track in tracker.tracks:
            run: list[tuple[int, Detection]] = []
            for index, detection in track.observations + [(None, None)]:
                if run and (index is None or index - run[-1][0] > self.max_gap + 1):
                    segment = Segment(float(times[run[0][0]]), float(times[run[-1][0]]) + step, track.id,
                                      tuple((float(times[i]), d.box) for i, d in run))
                    if best is None or segment.duration > best.duration:
                        best = segment
                    run = []
                if index is not None:
                    run.append((index, detection))
        if best is None:
            return None, f"no subject detected at {self.min_area:.0%} of the frame or more"
        if best.duration < self.min_duration:
            return None, (f"subject tracked for {best.duration:.1f} s at most, "
                          f"less than the {self.min_duration:.1f} s needed")
        return best, ""
