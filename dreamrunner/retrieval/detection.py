"""Subject detectors for tracking-based segmentation: one interface, three real implementations.

- `HogPeopleDetector`: OpenCV's built-in HOG + linear SVM people detector (ships with OpenCV, no download).
- `MotionBlobDetector`: blobs of pixels that differ from the clip's median background, for any subject
  that moves in front of a steady camera (animals, cartoon characters, vehicles).
- `TransformersDetector`: any transformers object-detection checkpoint (DETR, YOLOS, ...) when its weights
  are on disk.
Boxes are normalized (x0, y0, x1, y1) with the origin top-left, like the story's region boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import DreamRunnerError


class DetectorUnavailable(DreamRunnerError):
    """The detector cannot run here (missing weights or OpenCV build)."""


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]
    score: float
    label: str = "subject"

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@runtime_checkable
class Detector(Protocol):
    def reset(self) -> None:
        """Forget per-clip state; called before each clip's frames. (A detector may also have
        `fit(frames)`, called next with all the clip's sampled frames, e.g. to learn its background.)"""

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Detections in one RGB uint8 HxWx3 frame."""


def _normalize(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[float, float, float, float]:
    return (max(0.0, x / width), max(0.0, y / height), min(1.0, (x + w) / width), min(1.0, (y + h) / height))


class HogPeopleDetector:
    """Upright people (OpenCV's default HOG people SVM, 64x128 windows), non-maximum suppressed."""

    def __init__(self, score_threshold: float = 0.5, working_height: int = 320, nms_iou: float = 0.4) -> None:
        import cv2

        if not hasattr(cv2, "HOGDescriptor"):
            raise DetectorUnavailable("this OpenCV build has no HOG detector (OpenCV 5 moved it to the contrib "
                                      "build: install opencv-contrib-python-headless)")
        self._cv2 = cv2
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold = score_threshold
        self.working_height = working_height
        self.nms_iou = nms_iou

    def reset(self) -> None:
        pass

    def detect(self, frame: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        height, width = frame.shape[:2]
        # People must be at least 128 px tall for the 64x128 window: work at a fixed height.
        scale = self.working_height / height
        image = cv2.resize(frame, (max(64, round(width * scale)), self.working_height))
        boxes, weights = self._hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(boxes) == 0:
            return []
        weights = np.ravel(weights).astype(float)
        keep = cv2.dnn.NMSBoxes([list(map(int, b)) for b in boxes], weights.tolist(), self.score_threshold,
                                self.nms_iou)
        h_img, w_img = image.shape[:2]
        return [Detection(_normalize(*boxes[i], w_img, h_img), float(weights[i]), "person")
                for i in np.ravel(keep)]


class MotionBlobDetector:
    """Moving subjects: pixels that differ from the clip's background, grouped into blobs.

    Frames are first aligned to the clip's middle frame (ORB features + a RANSAC similarity transform), so a
    slowly panning or zooming camera does not read as motion; boxes are in the middle frame's coordinates.
    The background is the per-pixel temporal median of the aligned frames (`fit`), which has no ghosts and
    no warm-up, as long as the subject does not stand on one spot for most of the clip.
    """

    def __init__(self, min_area: float = 0.005, threshold: int = 30, working_width: int = 320,
                 max_foreground: float = 0.5, merge_distance: float = 0.03) -> None:
        import cv2

        self._cv2 = cv2
        self.min_area = min_area
        self.threshold = threshold
        self.working_width = working_width
        self.max_foreground = max_foreground
        self.merge_distance = merge_distance
        self.reset()

    def reset(self) -> None:
        self._background: np.ndarray | None = None
        self._reference = None  # ORB keypoints and descriptors of the middle frame

    def _small(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        size = (self.working_width, max(1, round(height * self.working_width / width)))
        return self._cv2.resize(frame, size, interpolation=self._cv2.INTER_AREA)

    def _features(self, image: np.ndarray):
        return self._orb.detectAndCompute(self._cv2.cvtColor(image, self._cv2.COLOR_RGB2GRAY), None)

    def _align(self, image: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        keypoints, descriptors = self._features(image)
        ref_keypoints, ref_descriptors = self._reference
        if descriptors is None or ref_descriptors is None:
            return image
        matches = self._matcher.match(descriptors, ref_descriptors)
        if len(matches) < 20:
            return image
        source = np.float32([keypoints[m.queryIdx].pt for m in matches])
        target = np.float32([ref_keypoints[m.trainIdx].pt for m in matches])
        transform, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=3)
        if transform is None or inliers.sum() < 20:
            return image
        height, width = image.shape[:2]
        return cv2.warpAffine(image, transform, (width, height), borderMode=cv2.BORDER_REPLICATE)

    def fit(self, frames: list[np.ndarray]) -> None:
        """Learns the clip's background (and reference frame) from its sampled frames."""
        cv2 = self._cv2
        self._orb = cv2.ORB_create(500)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        small = [self._small(f) for f in frames]
        self._reference = self._features(small[len(small) // 2])
        aligned = [self._align(image) for image in small]
        self._background = np.median(np.stack(aligned), axis=0).astype(np.int16)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        if self._background is None:
            self.fit([frame])  # a lone frame is its own background: nothing moves in it
        image = self._align(self._small(frame)).astype(np.int16)
        mask = (np.abs(image - self._background).max(axis=2) > self.threshold).astype(np.uint8) * 255
        if (mask > 0).mean() > self.max_foreground:  # a cut or a camera move, not a subject
            return []
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        h_img, w_img = mask.shape
        boxes = [list(_normalize(x, y, w, h, w_img, h_img)) for x, y, w, h, _ in stats[1:count]]
        boxes = self._merge(boxes)
        detections = [Detection(tuple(b), (b[2] - b[0]) * (b[3] - b[1]), "moving") for b in boxes]
        return sorted((d for d in detections if d.area >= self.min_area), key=lambda d: -d.score)

    def _merge(self, boxes: list[list[float]]) -> list[list[float]]:
        """Unions boxes closer than `merge_distance`: the limbs and torso of one body often come apart."""
        gap = self.merge_distance
        merged = True
        while merged:
            merged = False
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    a, b = boxes[i], boxes[j]
                    if a[0] - gap <= b[2] and b[0] - gap <= a[2] and a[1] - gap <= b[3] and b[1] - gap <= a[3]:
                        boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                        del boxes[j]
                        merged = True
                        break
                if merged:
                    break
        return boxes


class TransformersDetector:
    """A transformers object-detection model (e.g. DETR, YOLOS) keeping the given labels above a threshold."""

    def __init__(self, model, processor, labels: tuple[str, ...] = ("person",), threshold: float = 0.7) -> None:
        self.model = model.eval()
        self.processor = processor
        self.labels = {label.lower() for label in labels}
        self.threshold = threshold

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, labels: tuple[str, ...] = ("person",),
                        threshold: float = 0.7, allow_download: bool = False) -> TransformersDetector:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        local = not allow_download
        try:
            model = AutoModelForObjectDetection.from_pretrained(str(name_or_path), local_files_only=local)
            processor = AutoImageProcessor.from_pretrained(str(name_or_path), local_files_only=local,
                                                           **_pil_backend())
        except OSError as error:
            raise DetectorUnavailable(
                f"no object-detection weights at {name_or_path!r} ({str(error).splitlines()[0]}); download them "
                "where you have network, pass the local folder, or use the 'hog' or 'motion' detector") from None
        return cls(model, processor, labels, threshold)

    def reset(self) -> None:
        pass

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import torch

        height, width = frame.shape[:2]
        inputs = self.processor(images=frame, return_tensors="pt")
        with torch.no_grad():
            outputs = self.model(**inputs)
        result = self.processor.post_process_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(height, width)])[0]
        names = self.model.config.id2label
        detections = []
        for score, label, box in zip(result["scores"].tolist(), result["labels"].tolist(), result["boxes"].tolist()):
            name = str(names.get(label, label)).lower()
            if self.labels and name not in self.labels:
                continue
            x0, y0, x1, y1 = box
            detections.append(Detection(_normalize(x0, y0, x1 - x0, y1 - y0, width, height), float(score), name))
        return detections


def _pil_backend() -> dict:
    """Keyword for an image processor that needs no torchvision (none on CPU here): transformers >= 5 calls
    it backend="pil", older releases use_fast=False."""
    import transformers

    return {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}


def make_detector(name: str, allow_download: bool = False) -> Detector:
    """'hog', 'motion', or 'transformers:<model folder or hub id>'."""
    if name == "hog":
        return HogPeopleDetector()
    if name == "motion":
        return MotionBlobDetector()
    if name.startswith("transformers:"):
        return TransformersDetector.from_pretrained(name.split(":", 1)[1], allow_download=allow_download)
    raise DreamRunnerError(f"unknown detector {name!r}; use 'hog', 'motion' or 'transformers:<model>'")
