"""FFHQ-style face alignment from 5 landmarks (eyes, nose, mouth corners), as used to build FFHQ.

The crop is the FFHQ recipe (NVIDIA's ``align_images`` / ``recreate_aligned_images``): an oriented square
("quad") from the eye-to-eye and eye-to-mouth vectors, then shrink / crop / reflect-pad with a blurred border,
then a perspective-free quad warp to ``output_size``. With 5-point landmarks the eye centres are the eye
points themselves (FFHQ averages 6 dlib points per eye) and the mouth corners are points 4 and 5.

Landmark order (facenet-pytorch MTCNN): left eye, right eye, nose, left mouth corner, right mouth corner,
as (x, y) pixel coordinates, "left" meaning the smaller x in an upright face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter


def ffhq_quad(landmarks: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop quad (4, 2) (corners: top-left, bottom-left, bottom-right, top-right) and its side length.

    ``landmarks``: (5, 2) as above, or (68, 2) dlib landmarks (eyes averaged, mouth corners 48 / 54).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
        mouth_left, mouth_right = lm[48], lm[54]
    elif lm.shape == (5, 2):
        eye_left, eye_right, _, mouth_left, mouth_right = lm
    else:
        raise ValueError(f"landmarks must be (5, 2) or (68, 2) (x, y) points, got shape {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or Inf")
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # x: the crop's horizontal half-axis, the eye line corrected by the face's vertical axis
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm < 1e-8:
        raise ValueError("degenerate landmarks: eyes and mouth give no orientation")
    x /= norm
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def align_face(
    image: Image.Image | np.ndarray,
    landmarks: Sequence[Sequence[float]] | np.ndarray,
    output_size: int = 1024,
    transform_size: int | None = None,
    enable_padding: bool = True,
) -> Image.Image:
    """The FFHQ-aligned crop of ``image`` (RGB) as a PIL image of ``output_size`` x ``output_size``."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("RGB")
    quad, qsize = ffhq_quad(landmarks)
    # warp at up to 4x the output size, then downsample (FFHQ: 4096 -> 1024)
    transform_size = max(output_size, transform_size or min(4 * output_size, 4096))

    # shrink: anti-aliasing for large faces
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(size, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # crop to the quad's bounding box plus a border
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, img.size[0]),
        min(crop[3] + border, img.size[1]),
    )
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # pad (reflect, blurred and faded toward the mean colour) where the quad leaves the image
    pad = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - img.size[0] + border, 0),
        max(pad[3] - img.size[1] + border, 0),
    )
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, max(int(np.rint(qsize * 0.3)), 1))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(
            1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
            1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]),
        )
        blur = qsize * 0.02
        blurred = np.float32(
            Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255))).filter(ImageFilter.GaussianBlur(blur))
        )
        arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    # warp the quad to a square, then resize to the output size
    img = img.transform(
        (transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR
    )
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return img


def center_crop(image: Image.Image | np.ndarray, output_size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``output_size`` (for ``detector=none``)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((output_size, output_size), Image.LANCZOS)


def detect_landmarks(image: Image.Image | np.ndarray, device: str = "cpu") -> np.ndarray:
    """5 landmarks (5, 2) of the most confident face, by facenet-pytorch MTCNN (weights ship in its wheel)."""
    from facenet_pytorch import MTCNN

    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    mtcnn = MTCNN(keep_all=True, device=device, select_largest=False)
    boxes, probs, points = mtcnn.detect(img.convert("RGB"), landmarks=True)
    if boxes is None or len(boxes) == 0:
        raise ValueError(
            "no face found in the image; pass detector=none (centre crop) or the 5 landmarks as "
            "landmarks=[[x,y],...] (left eye, right eye, nose, left/right mouth corner)"
        )
    best = int(np.argmax(probs))
    return np.asarray(points[best], dtype=np.float64)  # (5, 2)
