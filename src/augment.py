"""Batched multi-view augmentation for the CLIP-NCE queries (paper: K = 8 random-perspective views).

The official code loops over views in Python and draws one parameter set per call for the whole batch. Here
all B*K views get their own parameters from one batched kornia call. Extra inputs (e.g. the source image)
can be warped with exactly the same per-view parameters. The factories below are Hydra targets
(``_target_: src.augment.perspective``) with plain arguments; ``fill`` is a value in the image's own [-1, 1]
space (0 = mid grey, the official border fill). Perspective views are warped by :func:`warp_homography`
(kornia's parameters and sampling, a cheaper grid). ``MultiView(resize_to="clip")`` (the default of conf/aug)
makes the views at the guiding CLIP's input size instead of the generator's (docs/performance.md).
"""

from __future__ import annotations

import warnings
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_homography
from kornia.utils import create_meshgrid
from torch import Tensor, nn

CLIP_SIZE = "clip"  # aug.resize_to: the guiding CLIP's input size (MultiView.bind_clip)


class MultiView(nn.Module):
    """K augmented views per image, parameters drawn per sample for all B*K views in one batched kornia call."""

    def __init__(
        self,
        transform: nn.Module | None,
        num_views: int = 8,
        resize_to: int | str | None = None,
        flip: float = 0.0,
    ):
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip is a probability in [0, 1], got {flip}")
        if resize_to != CLIP_SIZE and resize_to is not None and (isinstance(resize_to, str) or resize_to < 1):
            raise ValueError(f"resize_to must be a positive size, {CLIP_SIZE!r} or None, got {resize_to!r}")
        self.transform = transform  # a kornia augmentation (forward_parameters + forward(x, params)) or None
        self.num_views = num_views
        # Shrink the inputs (shorter side -> resize_to, antialiased, CLIP's kernel) before replicating and
        # warping them, instead of warping K copies at the generator's size and resizing each (the official
        # order). "clip" = the guiding CLIP's input size, set by bind_clip (1024 px: ~20x fewer warped pixels).
        # Never upsamples: a no-op where the generator is not larger than CLIP's input (toyfaces, tiny).
        self.resize_to = resize_to
        self.size: int | None = None if resize_to == CLIP_SIZE else resize_to  # resolved size
        self.interpolation = "bicubic"  # open_clip's; bind_clip takes the CLIP's own
        # share of views mirrored left-right after the transform (not in the paper; 0: off): a guide that reads
        # one side of the image only (the toy CLIPs read pointed ears from the right ear) then sees both
        self.flip = float(flip)
        self._unbound_warned = False

    def bind_clip(self, clip: nn.Module) -> MultiView:
        """Resolve ``resize_to="clip"`` to ``clip``'s input size and use its resize kernel (src.builders)."""
        if self.resize_to == CLIP_SIZE:
            self.size = clip_input_size(clip)
        self.interpolation = getattr(clip, "resize_mode", self.interpolation)
        return self

    def forward(self, x: Tensor, *others: Tensor) -> Tensor | tuple[Tensor, ...]:
        """x (B, C, H, W) -> (B, K, C, H, W); each extra (B, C', H, W) input gets the same per-view warp.

        Inputs are concatenated on the channel axis so one draw and one warp serve them all; this is exact for
        geometric transforms (channel-independent). Intensity transforms get the same parameters per input.
        """
        assert x.ndim == 4, f"expected (B, C, H, W), got {tuple(x.shape)}"
        b, k = x.shape[0], self.num_views
        for o in others:
            assert o.ndim == 4 and o.shape[0] == b and o.shape[-2:] == x.shape[-2:], (
                f"extra input {tuple(o.shape)} does not match {tuple(x.shape)} in batch and size"
            )
        inputs = [
            self._shrink(t).repeat_interleave(k, dim=0) for t in (x, *others)
        ]  # each (B*K, C_i, H', W'), view-major per image
        if self.transform is not None:
            inputs = self._augment(inputs)
        if self.flip > 0:  # one draw per view (on the host, as kornia's), the same for every input
            mirror = (torch.rand(b * k) < self.flip).to(x.device, non_blocking=True)[:, None, None, None]
            inputs = [torch.where(mirror, t.flip(-1), t) for t in inputs]
        views = tuple(t.reshape(b, k, *t.shape[1:]) for t in inputs)  # each (B, K, C_i, H, W)
        return views if others else views[0]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> MultiView:
        """Moving the module moves kornia's samplers too; on a GPU kornia's perspective sampler then copies its
        draws back to the host (two blocking syncs per step, measured on an H200). Draw on the CPU instead, as
        kornia does by default (the same draws on every device), and send them over without blocking."""
        out = super()._apply(fn, *args, **kwargs)
        for m in self.modules():
            if isinstance(m, K.base._BasicAugmentationBase):
                m.set_rng_device_and_dtype(torch.device("cpu"), torch.get_default_dtype())
        return out

    def _params_to(self, params: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Floating-point parameters (points, angles, boxes) to the images' device without a host sync; integer
        and boolean ones (the gate, shapes) stay on the host, where kornia reads them in Python."""
        return {
            k: v.to(device, non_blocking=True) if isinstance(v, Tensor) and v.is_floating_point() else v
            for k, v in params.items()
        }

    def _shrink(self, t: Tensor) -> Tensor:
        """(B, C, H, W) -> shorter side ``size`` (torchvision's Resize(int) sizes, as CLIP's preprocessing);
        never upsamples. Unbound ``"clip"`` (no CLIP to read the size from): the official order, warned once."""
        if self.size is None and self.resize_to == CLIP_SIZE and not self._unbound_warned:
            self._unbound_warned = True
            warnings.warn(
                "MultiView(resize_to='clip') was never bound to a CLIP (bind_clip): views are made "
                "at the input's size",
                stacklevel=3,
            )
        h, w = t.shape[-2:]
        if self.size is None or min(h, w) <= self.size:
            return t
        size = self.size
        new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        return F.interpolate(
            t, size=(new_h, new_w), mode=self.interpolation, align_corners=False, antialias=True
        )

    def _augment(self, inputs: list[Tensor]) -> list[Tensor]:
        if len(inputs) > 1 and isinstance(self.transform, K.IntensityAugmentationBase2D):
            params = self.transform.forward_parameters(inputs[0].shape)  # one draw, applied to each input
            params = self._params_to(params, inputs[0].device)
            return [self.transform(t, params=params) for t in inputs]
        stacked = torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0]  # (B*K, sum C_i, H, W)
        params = self.transform.forward_parameters(stacked.shape)  # per-sample: B*K parameter sets
        params = self._params_to(params, stacked.device)
        out = self.transform(stacked, params=params)
        return list(out.split([t.shape[1] for t in inputs], dim=1))

    def extra_repr(self) -> str:
        return f"num_views={self.num_views}, resize_to={self.resize_to!r}, size={self.size}, flip={self.flip}"


def clip_input_size(clip: nn.Module) -> int:
    """The image size a CLIP reads (``image_size``); an ensemble: the largest of its members' sizes."""
    size = getattr(clip, "image_size", None)
    if isinstance(size, int):
        return size
    sizes = [m.image_size for m in clip.modules() if isinstance(getattr(m, "image_size", None), int)]
    if not sizes:
        raise ValueError(f"cannot read the input size of {type(clip).__name__}: set aug.resize_to to a size")
    return max(sizes)


def _inverse_3x3(m: Tensor) -> Tensor:
    """Batched 3x3 inverse by the adjugate: pure arithmetic, so no CUDA host sync (torch.linalg.inv checks
    for singular matrices on the host). (N, 3, 3) -> (N, 3, 3)."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    adj = torch.stack(
        [
            torch.stack([e * i - f * h, c * h - b * i, b * f - c * e], -1),
            torch.stack([f * g - d * i, a * i - c * g, c * d - a * f], -1),
            torch.stack([d * h - e * g, b * g - a * h, a * e - b * d], -1),
        ],
        -2,
    )  # (N, 3, 3)
    det = a * adj[:, 0, 0] + b * adj[:, 1, 0] + c * adj[:, 2, 0]
    return adj / det[:, None, None]


def warp_homography(
    x: Tensor,
    homography: Tensor,
    mode: str = "bilinear",
    align_corners: bool = False,
    fill: float | None = None,
) -> Tensor:
    """kornia's ``warp_perspective(x, homography, x.shape[-2:])`` with a cheaper sampling grid.

    ``homography`` (N, 3, 3) maps source pixels to destination pixels (kornia's convention). The grid is one
    (H*W, 3) @ (N, 3, 3) product and one divide instead of kornia's dozen full-size elementwise passes, which
    at 1024 px cost more than the sampling itself. ``fill`` (None = zero padding) is the value of pixels that
    come from outside the image: out = warp(x) + (1 - warp(1)) * fill, kornia's blend.
    """
    n, c, h, w = x.shape
    dtype = x.dtype if x.is_floating_point() and x.dtype in (torch.float32, torch.float64) else torch.float32
    m = homography.to(dtype)
    m = m / m.abs().amax(
        dim=(-2, -1), keepdim=True
    )  # the same projective map at unit scale (kornia does this)
    dst_from_src = normalize_homography(m, (h, w), (h, w), align_corners=align_corners)  # normalised coords
    src_from_dst = _inverse_3x3(dst_from_src)  # (N, 3, 3)
    base = create_meshgrid(
        h, w, normalized_coordinates=True, device=x.device, dtype=dtype, align_corners=align_corners
    )
    base = torch.cat([base.reshape(h * w, 2), base.new_ones(h * w, 1)], dim=1)  # (H*W, 3) homogeneous
    pts = torch.matmul(base, src_from_dst.transpose(1, 2))  # (N, H*W, 3)
    grid = (pts[..., :2] / pts[..., 2:]).view(n, h, w, 2)  # (N, H, W, 2)
    src = x if x.dtype == dtype else x.to(dtype)
    if fill is not None and fill != 0.0:
        src = torch.cat([src, src.new_ones(n, 1, h, w)], dim=1)  # coverage channel, warped with the image
    out = F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=align_corners)
    if src.shape[1] > c:
        out, cover = out[:, :c], out[:, c:]
        out = out + (1 - cover) * fill
    return out.to(x.dtype)


class _Perspective(K.RandomPerspective):
    """kornia's RandomPerspective (same parameter draws) warped by :func:`warp_homography`, with a border
    ``fill`` (kornia's own class only pads with zeros)."""

    def __init__(self, distortion_scale: float, fill: float = 0.0, **kwargs: Any):
        super().__init__(distortion_scale, **kwargs)
        self.fill = float(fill)

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        return warp_homography(
            input,
            transform,
            mode=flags["resample"].name.lower(),
            align_corners=flags["align_corners"],
            fill=self.fill,
        )


class _ResizedCropToInput(nn.Module):
    """kornia RandomResizedCrop whose output size is the input's size (known only at call time)."""

    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float]):
        super().__init__()
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.crops = nn.ModuleDict()  # "HxW" -> kornia augmentation, built on first use

    def _crop(self, height: int, width: int) -> K.RandomResizedCrop:
        key = f"{height}x{width}"
        if key not in self.crops:
            # "resample" crops all samples with one batched warp (slice mode loops over samples).
            self.crops[key] = K.RandomResizedCrop(
                (height, width), scale=self.scale, ratio=self.ratio, p=1.0, cropping_mode="resample"
            )
        return self.crops[key]

    def forward_parameters(self, batch_shape: torch.Size) -> dict[str, Tensor]:
        return self._crop(*batch_shape[-2:]).forward_parameters(batch_shape)

    def forward(self, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        return self._crop(*x.shape[-2:])(x, params=params)


def perspective(distortion: float = 0.5, fill: float = 0.0) -> nn.Module:
    """Random perspective (torchvision semantics: corners move inward by up to distortion/2 of the size).

    Fill 0 (mid grey) is zero padding and needs no coverage warp."""
    return _Perspective(distortion, fill, p=1.0, same_on_batch=False)


def affine(
    degrees: float = 15,
    translate: float = 0.1,
    scale: tuple = (0.9, 1.1),
    shear: float = 5,
    fill: float = 0.0,
) -> nn.Module:
    """Random rotation (+-degrees), translation (fraction of size), scale and x-shear (+-shear degrees)."""
    pad = (
        {"padding_mode": "zeros"}
        if fill == 0.0
        else {"padding_mode": "fill", "fill_value": torch.tensor([fill])}
    )
    return K.RandomAffine(
        degrees=degrees,
        translate=(translate, translate),
        scale=tuple(scale),
        shear=shear,
        p=1.0,
        same_on_batch=False,
        **pad,
    )


def crop(scale: tuple = (0.5, 1.0), ratio: tuple = (0.75, 1.333)) -> nn.Module:
    """Random crop (area fraction ``scale``, aspect ``ratio``) resized back to the input size."""
    return _ResizedCropToInput(scale, ratio)


def none() -> None:
    """No augmentation: MultiView returns K identical copies."""
    return None
