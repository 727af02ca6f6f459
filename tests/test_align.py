"""FFHQ alignment maths on known landmarks, the warp itself, and MTCNN's 5 landmarks on a real face."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src.align import align_face, center_crop, detect_landmarks, ffhq_quad

# an upright face: eyes 40 px apart at y=100, mouth corners 30 px apart at y=150
LM = np.array([[100.0, 100], [140, 100], [120, 125], [105, 150], [135, 150]])


def test_quad_of_known_landmarks():
    # eye_to_eye (40, 0), eye_to_mouth (0, 50): x = (40, 0) + (50, 0) -> unit (1, 0) * max(2*40, 1.8*50) = 90;
    # y = (0, 90); centre = eye_avg (120, 100) + 0.1 * eye_to_mouth = (120, 105)
    quad, qsize = ffhq_quad(LM)
    np.testing.assert_allclose(quad, [[30, 15], [30, 195], [210, 195], [210, 15]])
    assert qsize == pytest.approx(180)


def test_quad_follows_rotation_scale_and_shift():
    theta, scale, shift = np.deg2rad(25), 1.7, np.array([13.0, -7.0])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (LM @ rot.T) * scale + shift
    quad, qsize = ffhq_quad(LM)
    quad2, qsize2 = ffhq_quad(moved)
    np.testing.assert_allclose(quad2, (quad @ rot.T) * scale + shift, atol=1e-9)
    assert qsize2 == pytest.approx(qsize * scale)


def test_68_point_landmarks_use_eye_means_and_mouth_corners():
    lm68 = np.zeros((68, 2))
    lm68[36:42] = LM[0] + np.array([[-3, 0], [3, 0], [0, 1], [0, -1], [1, 1], [-1, -1]])  # mean: the eye
    lm68[42:48] = LM[1]
    lm68[48], lm68[54] = LM[3], LM[4]
    np.testing.assert_allclose(ffhq_quad(lm68)[0], ffhq_quad(LM)[0])
    with pytest.raises(ValueError, match="landmarks"):
        ffhq_quad(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_quad(np.zeros((5, 2)))


def _bright_spot(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("L"), dtype=np.float64)
    ys, xs = np.nonzero(a > a.max() * 0.5)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("size", [64, 128])
def test_warp_puts_the_eyes_where_the_quad_says(size):
    # a dark 300x260 image with one bright dot on the left eye: after alignment the dot sits at
    # ((eye - quad[0]) . unit axes) / qsize * size = (70/180, 85/180) * size
    img = np.zeros((260, 300, 3), np.uint8)
    x, y = LM[0].astype(int)
    img[y - 2 : y + 3, x - 2 : x + 3] = 255
    out = align_face(img, LM, output_size=size)
    assert out.size == (size, size)
    expected = np.array([70 / 180, 85 / 180]) * size
    np.testing.assert_allclose(_bright_spot(out), expected, atol=max(1.0, size / 64))


def test_padding_when_the_face_touches_the_border():
    img = (np.random.default_rng(0).random((120, 150, 3)) * 255).astype(np.uint8)
    out = align_face(img, LM - [60, 60], output_size=32)  # the quad leaves the image on every side
    assert out.size == (32, 32) and np.asarray(out).std() > 0


def test_center_crop():
    img = Image.new("RGB", (100, 60), (10, 20, 30))
    assert center_crop(img, 32).size == (32, 32)


def test_mtcnn_finds_five_landmarks_on_a_real_face():
    data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the astronaut photo")
    img = data.astronaut()  # 512x512, one face around x 180-270, y 70-170
    lm = detect_landmarks(img)
    assert lm.shape == (5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]  # image-left first
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])  # eyes, nose, mouth
    assert (
        (lm[:, 0] > 150).all() and (lm[:, 0] < 300).all() and (lm[:, 1] > 50).all() and (lm[:, 1] < 200).all()
    )
    aligned = align_face(img, lm, output_size=64)
    assert aligned.size == (64, 64)
    with pytest.raises(ValueError, match="no face found"):
        detect_landmarks(np.zeros((64, 64, 3), np.uint8))
