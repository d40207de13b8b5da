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
of its training signal. dlib's 68-point shape predictor, a model that is not the loss's, reads
the same square in both images when the ``faces68`` extra is installed (dlib-bin, and
face-recognition-models, which ships ``shape_predictor_68_face_landmarks.dat``; its model was
trained on 300-W, whose terms exclude commercial use):

- ``dlib68_error``: the mean distance between the output's 68 points and the photo's, over the
  distance between the photo's outer eye corners (points 36 and 45), averaged over faces;
  ``dlib68_share_above_0.08``: the share of faces whose error exceeds 0.08.

Without dlib or the model file those two figures are absent and evaluation.json says why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartoon.data.faces import FACE_BOX, FaceDetector
from cartoon.inference import to_tensor
from cartoon.landmarks import LandmarkModel, detect_landmarks
from cartoon.weights import file_sha256

NME_THRESHOLD = 0.08
MATCH_IOU = 0.5
DLIB68_PACKAGE = "face_recognition_models"
DLIB68_FILE = "shape_predictor_68_face_landmarks.dat"
OUTER_EYE_CORNERS = (36, 45)  # 0-based, in the 68-point (iBUG 300-W) scheme
FACES68_HINT = "install the faces68 extra (pip install -e '.[faces68]')"


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


def dlib68_error(photo_points: np.ndarray, output_points: np.ndarray) -> float:
    """Mean distance of 68 points over the photo's outer eye-corner distance."""
    left, right = OUTER_EYE_CORNERS
    eyes = float(np.linalg.norm(photo_points[right] - photo_points[left]))
    return float(np.linalg.norm(output_points - photo_points, axis=1).mean() / max(eyes, 1e-6))


def packaged_dlib68() -> Path | None:
    """The 68-point model face-recognition-models ships, if installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec(DLIB68_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / DLIB68_FILE
        if path.is_file():
            return path
    return None


@dataclass
class Dlib68:
    """dlib's 68-point shape predictor, with the file it came from."""

    predictor: Any
    path: Path
    sha256: str

    @property
    def source(self) -> str:
        return f"dlib68:{self.sha256[:12]}"

    def points(self, image: np.ndarray, square: tuple[float, float, float, float]) -> np.ndarray:
        """The 68 points (x, y) of the face in ``square`` of an RGB image."""
        import dlib

        rectangle = dlib.rectangle(*(int(round(value)) for value in square))
        shape = self.predictor(np.ascontiguousarray(image, dtype=np.uint8), rectangle)
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)


def load_dlib68(override: str | Path | None = None) -> tuple[Dlib68 | None, str]:
    """The 68-point predictor (``evaluate.dlib_predictor`` when set, else face-recognition-models'
    file), or None and why not, in one line. dlib is imported here, not with this module."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            return None, f"evaluate.dlib_predictor: file not found: {path}"
    else:
        path = packaged_dlib68()
        if path is None:
            return None, f"no 68-point model: {FACES68_HINT}"
    try:
        import dlib
    except ImportError:
        return None, f"dlib is not installed: {FACES68_HINT}"
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"cannot read the 68-point model {path}: {reason}"
    parts = predictor(np.zeros((8, 8, 3), np.uint8), dlib.rectangle(0, 0, 7, 7)).num_parts
    if parts != 68:
        return None, f"{path} predicts {parts} points, not 68"
    return Dlib68(predictor, path, file_sha256(path)), ""


@dataclass
class FaceMeter:
    """Accumulates the face figures of photo/output pairs (see the module doc)."""

    landmarks: LandmarkModel
    detector: FaceDetector
    aligned: bool = False  # the inputs are aligned face crops: one face each, at the template square
    dlib68: Dlib68 | None = None  # the independent 68-point check, when the faces68 extra is installed
    errors: list[float] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    dlib68_errors: list[float] = field(default_factory=list)

    def add(self, photo: np.ndarray, output: np.ndarray) -> None:
        height, width = photo.shape[:2]
        if self.aligned:
            boxes = [(FACE_BOX[0] * width, FACE_BOX[1] * height, FACE_BOX[2] * width, FACE_BOX[3] * height)]
        else:
            boxes = [face.box for face in self.detector.detect(photo)[0]]
        if not boxes:
            return
        squares = torch.tensor([square_box(box) for box in boxes], dtype=torch.float32)
        if self.dlib68 is not None:
            for square in squares.tolist():
                before = self.dlib68.points(photo, square)
                self.dlib68_errors.append(dlib68_error(before, self.dlib68.points(output, square)))
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
        figures = {
            "faces": len(errors),
            "onet_error": float(errors.mean()),
            f"onet_share_above_{NME_THRESHOLD}": float((errors > NME_THRESHOLD).mean()),
            "detected_share": float(np.mean(self.detected)),
        }
        if self.dlib68_errors:
            dlib_errors = np.asarray(self.dlib68_errors)
            figures["dlib68_error"] = float(dlib_errors.mean())
            figures[f"dlib68_share_above_{NME_THRESHOLD}"] = float((dlib_errors > NME_THRESHOLD).mean())
        return figures
