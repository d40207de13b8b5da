"""Face metrics of `cartoon evaluate`: do the cartoons keep the faces of their photos?

For every face in an input photo (found by MTCNN, or with ``evaluate.faces: aligned`` the
template square of an aligned face crop), the same square is read by MTCNN's O-Net in the photo
and in the output:

- ``onet_error``: the mean distance between the output's five points and the photo's, over the
  distance between the photo's eye centres (a normalised mean error, as the landmark literature
  reports it), averaged over faces; ``onet_share_above_0.08``: the share of faces whose error
  exceeds 0.08;
- ``detected_share``: the share of faces MTCNN still finds in the output (a detection whose box
  overlaps the photo's with IoU >= 0.5).

The landmark loss of the face method reads the same O-Net, so these figures are not independent
of its training signal; dlib's 68-point predictor, a model that is not the loss's, is an
optional extra (its model was trained on 300-W, whose terms exclude commercial use). Without it,
evaluation.json says why its figures are absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cartoon.data.faces import FACE_BOX, FaceDetector
from cartoon.inference import to_tensor
from cartoon.landmarks import LandmarkModel, detect_landmarks

NME_THRESHOLD = 0.08
MATCH_IOU = 0.5


def square_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The square around a detection box's centre whose side is the box's longer side (MTCNN's own squaring)."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def normalised_error(photo_points: np.ndarray, output_points: np.ndarray) -> float:
    """Mean point distance over the photo's eye-centre distance."""
    eyes = float(np.linalg.norm(photo_points[1] - photo_points[0]))
    return float(np.linalg.norm(output_points - photo_points, axis=1).mean() / max(eyes, 1e-6))


@dataclass
class FaceMeter:
    """Accumulates the face figures of photo/output pairs (see the module doc)."""

    landmarks: LandmarkModel
    detector: FaceDetector
    aligned: bool = False  # the inputs are aligned face crops: one face each, at the template square
    errors: list[float] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)

    def add(self, photo: np.ndarray, output: np.ndarray) -> None:
        height, width = photo.shape[:2]
        if self.aligned:
            boxes = [(FACE_BOX[0] * width, FACE_BOX[1] * height, FACE_BOX[2] * width, FACE_BOX[3] * height)]
        else:
            boxes = [face.box for face in self.detector.detect(photo)[0]]
        if not boxes:
            return
        squares = torch.tensor([square_box(box) for box in boxes], dtype=torch.float32)
        with torch.no_grad():
            _, photo_points = detect_landmarks(self.landmarks, to_tensor(photo).expand(len(boxes), -1, -1, -1), squares)
            _, output_points = detect_landmarks(self.landmarks, to_tensor(output).expand(len(boxes), -1, -1, -1), squares)
        found = [face.box for face in self.detector.detect(output)[0]]
        for box, before, after in zip(boxes, photo_points.numpy(), output_points.numpy()):
            self.errors.append(normalised_error(before, after))
            self.detected.append(any(iou(box, other) >= MATCH_IOU for other in found))

    def summary(self) -> dict[str, float] | None:
        """The figures over every face seen, or None when no input showed a face."""
        if not self.errors:
            return None
        errors = np.asarray(self.errors)
        return {
            "faces": len(errors),
            "onet_error": float(errors.mean()),
            f"onet_share_above_{NME_THRESHOLD}": float((errors > NME_THRESHOLD).mean()),
            "detected_share": float(np.mean(self.detected)),
        }
