"""Face data: cartoon faces with known landmarks, alignment to the template, MTCNN detection with reasons."""

import numpy as np
import pytest
from skimage import data

from cartoon.data.faces import TEMPLATE, FaceDetector, align, cartoon_face, similarity_to_template
from cartoon.landmarks import packaged_weights

SIZE = 128


def _eye_centre(crop: np.ndarray, expected: np.ndarray, radius: int = 8) -> np.ndarray:
    """Centroid of the eye's pixels (white, pupil, outline: all that is not skin) near
    ``expected``: the eye is drawn concentric around its landmark, so this is where the eye
    really is in the image."""
    skin = crop[int(expected[1] + 0.1 * SIZE), int(expected[0])].astype(int)  # the cheek below the eye
    x0, y0 = (int(round(v)) - radius for v in expected)
    window = crop[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].astype(int)
    ys, xs = np.nonzero(np.abs(window - skin).max(axis=2) > 40)
    assert len(xs) > 20, "no eye found near the template position"
    return np.array([xs.mean() + x0, ys.mean() + y0])


def test_cartoon_faces_are_deterministic_and_varied():
    first = [cartoon_face(np.random.default_rng(7), SIZE) for _ in range(2)]
    assert np.array_equal(first[0][0], first[1][0]) and np.array_equal(first[0][1], first[1][1])
    rng = np.random.default_rng(8)
    poses = [cartoon_face(rng, SIZE)[1] for _ in range(6)]
    eye_angles = [np.degrees(np.arctan2(*(p[1] - p[0])[::-1])) for p in poses]
    assert np.ptp(eye_angles) > 10  # the in-plane rotation varies
    assert all(p.shape == (5, 2) for p in poses)


def test_alignment_puts_the_drawn_eyes_of_cartoon_faces_at_the_template():
    rng = np.random.default_rng(3)
    for _ in range(5):
        image, points = cartoon_face(rng, SIZE)
        crop, moved = align(image, points, SIZE)
        assert crop.shape == (SIZE, SIZE, 3)
        assert np.abs(moved - TEMPLATE * SIZE).max() < 0.05
        for eye in (0, 1):  # measured in the pixels, not taken from the transform
            assert np.abs(_eye_centre(crop, TEMPLATE[eye] * SIZE) - TEMPLATE[eye] * SIZE).max() < 2.0


def test_similarity_is_the_least_squares_fit():
    angle, scale, shift = np.radians(20), 0.7, np.array([5.0, -3.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (TEMPLATE * SIZE - shift) @ np.linalg.inv(rotation).T  # maps exactly onto the template
    matrix = similarity_to_template(points, SIZE)
    assert np.allclose(points @ matrix[:, :2].T + matrix[:, 2], TEMPLATE * SIZE, atol=1e-6)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_to_template(np.zeros((5, 2)), SIZE)


needs_mtcnn = pytest.mark.skipif(packaged_weights() is None, reason="facenet-pytorch (a dependency) is not installed")


@needs_mtcnn
def test_detector_finds_faces_and_says_why_it_keeps_none():
    detector = FaceDetector(min_size=40, min_score=0.9)
    faces, reason = detector.detect(data.astronaut())
    assert len(faces) == 1 and reason == "" and faces[0].score > 0.99 and faces[0].points.shape == (5, 2)
    assert detector.detect(data.coffee()) == ([], "no face detected")
    small = data.astronaut()[::4, ::4]  # the face shrinks to about 21 px
    assert FaceDetector(min_size=40, min_score=0.9).detect(np.ascontiguousarray(small))[1].startswith("face too small")


@needs_mtcnn
def test_detected_cartoon_faces_align_near_the_template():
    detector = FaceDetector(min_size=20, min_score=0.9)
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(6):
        image, _ = cartoon_face(rng, SIZE)
        faces, _ = detector.detect(image)
        if faces:
            _, moved = align(image, faces[0].points, SIZE)
            errors.append(np.abs(moved[:2] - TEMPLATE[:2] * SIZE).max())
    assert len(errors) >= 4  # MTCNN finds most generated cartoon faces
    assert np.median(errors) < 3.0


@needs_mtcnn
def test_an_image_smaller_than_a_face_is_a_reason_not_a_crash():
    faces, reason = FaceDetector(min_size=40, min_score=0.9).detect(np.zeros((12, 30, 3), np.uint8))
    assert faces == [] and reason.startswith("image too small for face detection")
