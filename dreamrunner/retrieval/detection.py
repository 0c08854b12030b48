"""Subject detectors for tracking-based segmentation: one interface, three real implementations.

- `HogPeopleDetector`: OpenCV's built-in HOG + linear SVM people detector (ships with OpenCV, no download).
- `MotionBlobDetector`: moving foreground blobs from OpenCV's MOG2 background subtractor, for any subject
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
        """Forget per-clip state; called before each clip's frames."""

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
    """Connected blobs of moving pixels (MOG2 background subtraction); a frame that is mostly foreground
    (a cut or the model's first frame) yields nothing."""

    def __init__(self, min_area: float = 0.005, max_foreground: float = 0.5, working_width: int = 320,
                 history: int = 50, var_threshold: float = 25.0, learning_rate: float = 0.2) -> None:
        import cv2

        self._cv2 = cv2
        self.min_area = min_area
        self.max_foreground = max_foreground
        self.working_width = working_width
        self.history = history
        self.var_threshold = var_threshold
        # A fixed, slow rate keeps a subject that stops for a moment from melting into the background
        # (and leaving a ghost where it stood when it moves on).
        self.learning_rate = learning_rate
        self.reset()

    def reset(self) -> None:
        self._subtractor = self._cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=False)
        self._frames = 0

    def detect(self, frame: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        height, width = frame.shape[:2]
        scale = self.working_width / width
        image = cv2.resize(frame, (self.working_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        first = self._frames == 0
        self._frames += 1
        mask = self._subtractor.apply(image, learningRate=1.0 if first else self.learning_rate)
        if first or (mask > 0).mean() > self.max_foreground:
            return []
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        # Join the parts of one moving body (limbs and torso separate easily at this resolution).
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 15)))
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        h_img, w_img = mask.shape
        detections = []
        for x, y, w, h, pixels in stats[1:count]:
            area = pixels / (w_img * h_img)
            if area >= self.min_area:
                detections.append(Detection(_normalize(x, y, w, h, w_img, h_img), float(area), "moving"))
        return sorted(detections, key=lambda d: -d.score)


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
            # The slow image processors need no torchvision (unavailable on CPU here).
            processor = AutoImageProcessor.from_pretrained(str(name_or_path), use_fast=False, local_files_only=local)
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


def make_detector(name: str, allow_download: bool = False) -> Detector:
    """'hog', 'motion', or 'transformers:<model folder or hub id>'."""
    if name == "hog":
        return HogPeopleDetector()
    if name == "motion":
        return MotionBlobDetector()
    if name.startswith("transformers:"):
        return TransformersDetector.from_pretrained(name.split(":", 1)[1], allow_download=allow_download)
    raise DreamRunnerError(f"unknown detector {name!r}; use 'hog', 'motion' or 'transformers:<model>'")
