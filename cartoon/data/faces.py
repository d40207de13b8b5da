"""Faces for the face method: detection (MTCNN), alignment to a fixed five-point template, and
cartoon faces drawn by the project's own code with their landmarks known.

Aligned crops put every face's eyes, nose tip and mouth corners at the same place
(``TEMPLATE``, fractions of the crop side), so a face batch needs no per-image box: the
landmark loss reads the same square (``FACE_BOX``) of every crop.

Detection is MTCNN's full P-Net, R-Net, O-Net cascade (Zhang et al. 2016) as the
``facenet-pytorch`` package implements it, with the weights its wheel ships; it is imported
only when a detector is built. Alignment is the least-squares similarity transform
(rotation, uniform scale, translation) from the five detected points to the template.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Eye centres (left, right as seen), nose tip, mouth corners as fractions of the crop side: the
# face fills the middle of the crop with room for hair and chin, as cartoon face sets are framed.
TEMPLATE = np.array([[0.375, 0.42], [0.625, 0.42], [0.5, 0.56], [0.405, 0.67], [0.595, 0.67]], np.float32)
# The square the landmark loss crops from an aligned face: centred on the template, about twice
# the eye distance wide, the framing of O-Net's training crops.
FACE_BOX = (0.2, 0.25, 0.8, 0.85)


@dataclass(frozen=True)
class Face:
    """One detected face: box (left, top, right, bottom), detection score, 5 x 2 landmarks, in pixels."""

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray

    @property
    def size(self) -> float:
        """The shorter side of the detection box."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def similarity_to_template(points: np.ndarray, size: int) -> np.ndarray:
    """The 2 x 3 least-squares similarity transform taking ``points`` (5 x 2, pixels) to the
    template of a ``size`` crop. In complex numbers a similarity is w = a z + b; the least-squares
    a is the centred cross-correlation over the centred energy (Umeyama's solution in 2-D)."""
    z = points[:, 0].astype(np.float64) + 1j * points[:, 1]
    w = (TEMPLATE[:, 0] + 1j * TEMPLATE[:, 1]).astype(np.complex128) * size
    zc, wc = z - z.mean(), w - w.mean()
    energy = float(np.sum(np.abs(zc) ** 2))
    if energy < 1e-6:
        raise ValueError("landmarks are degenerate (all at one point)")
    a = np.sum(wc * np.conj(zc)) / energy
    b = w.mean() - a * z.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def align(rgb: np.ndarray, points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` aligned crop of the face with landmarks ``points``, and its
    landmarks in the crop. Beyond the photo's edge its border pixels repeat (no black wedges for a GAN to learn)."""
    matrix = similarity_to_template(points, size)
    crop = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    moved = points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return crop, moved.astype(np.float32)


class FaceDetector:
    """MTCNN over one image at a time; faces below ``min_size`` px or ``min_score`` are dropped with a reason."""

    def __init__(self, min_size: int, min_score: float, device: str = "cpu") -> None:
        from facenet_pytorch import MTCNN  # the cascade and its weights; imported only to detect

        self.min_size, self.min_score = min_size, min_score
        self.mtcnn = MTCNN(min_face_size=max(12, min_size // 2), keep_all=True, device=device)

    def detect(self, rgb: np.ndarray) -> tuple[list[Face], str]:
        """Faces kept (largest first) and, when none is kept, why (for the manifest)."""
        if min(rgb.shape[:2]) < self.mtcnn.min_face_size:  # MTCNN's image pyramid would be empty
            return [], f"image too small for face detection ({min(rgb.shape[:2])} px < {self.mtcnn.min_face_size})"
        boxes, scores, points = self.mtcnn.detect(np.ascontiguousarray(rgb), landmarks=True)
        if boxes is None:
            return [], "no face detected"
        faces = [Face(tuple(float(v) for v in box), float(score), np.asarray(pts, np.float32))
                 for box, score, pts in zip(boxes, scores, points)]  # fmt: skip
        kept = sorted((f for f in faces if f.size >= self.min_size and f.score >= self.min_score), key=lambda f: -f.size)
        if kept:
            return kept, ""
        largest = max(faces, key=lambda f: f.size)
        if largest.size < self.min_size:
            return [], f"face too small ({largest.size:.0f} px < {self.min_size})"
        return [], f"face score too low ({max(f.score for f in faces):.3f} < {self.min_score})"


# --- cartoon faces -------------------------------------------------------------------------------

_SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 205, 210), (200, 230, 255)]
_HAIR = [(40, 30, 25), (90, 60, 30), (230, 200, 90), (180, 50, 40), (60, 60, 160), (240, 240, 240), (30, 120, 80)]
_OUTLINE = (25, 20, 20)


def cartoon_face(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat-coloured cartoon face with dark outlines and its five landmarks (5 x 2, pixels).

    Drawn at 4x and shrunk (anti-aliased edges, as a rendered cartoon has); pose (in-plane
    rotation, scale, position), eye and mouth shapes, skin, hair and background colours vary.
    The landmarks are where the eyes', nose tip's and mouth corners' shapes were drawn, so the
    faces are test fixtures for alignment and for the landmark network.
    """
    big = 4 * size
    canvas = np.empty((big, big, 3), np.uint8)
    canvas[:] = rng.integers(60, 256, 3)
    angle, scale = float(rng.uniform(-25, 25)), float(rng.uniform(0.75, 1.1))
    centre = np.array([big / 2, big / 2]) + rng.uniform(-0.08, 0.08, 2) * big
    unit = big * 0.5 * scale  # face coordinates are fractions of half the canvas, as the template's
    rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)

    def place(xy) -> np.ndarray:
        """Face coordinates (units of ``unit`` from the centre, before rotation) to canvas pixels."""
        return (centre + np.asarray(xy, np.float64) * unit) @ rotation[:, :2].T + rotation[:, 2]

    def ellipse(xy, axes, fill, outline=True, arc=(0, 360)) -> None:
        c = place(xy)
        size_px = (max(1, int(axes[0] * unit)), max(1, int(axes[1] * unit)))
        if fill is not None:
            cv2.ellipse(canvas, (int(c[0]), int(c[1])), size_px, -angle, arc[0], arc[1], fill, -1, cv2.LINE_AA)
        if outline:
            cv2.ellipse(canvas, (int(c[0]), int(c[1])), size_px, -angle, arc[0], arc[1], _OUTLINE, max(2, big // 64), cv2.LINE_AA)

    skin = tuple(int(v) for v in _SKIN[rng.integers(len(_SKIN))])
    hair = tuple(int(v) for v in _HAIR[rng.integers(len(_HAIR))])
    ellipse((0, -0.2), (0.6, 0.55), hair)  # hair behind the head
    ellipse((0, 0.1), (0.5, 0.62), skin)  # head
    # The landmarks keep the template's proportions (the pose moves them, the shapes around them vary).
    (left_eye, eye_y), (nose_x, nose_y), (mouth_x, mouth_y) = (TEMPLATE[0] - 0.5) * 2, (TEMPLATE[2] - 0.5) * 2, (TEMPLATE[3] - 0.5) * 2
    eye_w, eye_h = float(rng.uniform(0.08, 0.1)), float(rng.uniform(0.06, 0.09))
    for eye_x in (left_eye, -left_eye):
        ellipse((eye_x, eye_y), (eye_w, eye_h), (255, 255, 255))
        ellipse((eye_x, eye_y), (eye_w * 0.45, eye_h * 0.6), tuple(int(v) for v in rng.integers(0, 120, 3)), outline=False)
    nose = place((nose_x, nose_y))
    cv2.circle(canvas, (int(nose[0]), int(nose[1])), max(2, big // 80), _OUTLINE, -1, cv2.LINE_AA)
    ellipse((0, mouth_y), (-mouth_x, float(rng.uniform(0.04, 0.08))), (150, 40, 50), arc=(0, 180))
    points = np.array([place((left_eye, eye_y)), place((-left_eye, eye_y)), nose, place((mouth_x, mouth_y)),
                       place((-mouth_x, mouth_y))], np.float64)  # fmt: skip
    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return image, ((points + 0.5) / 4 - 0.5).astype(np.float32)  # pixel centres of the 4x canvas to the image's
