"""Image oracles.

Design: a float numpy array (H, W) or (C, H, W) with C = 1 or 3 (a torch tensor is accepted
too). Pixel values are in `value_range`, by default (-1, 1) (the diffusion convention; pass
(0, 1) for images already in [0, 1]); values outside are clipped. Non-finite pixels or another
shape give NaN with the reason.

Cost on one core: brightness < 0.1 ms; JPEG size ~0.3 ms at 64x64; digit probability ~0.1 ms.
"""
from __future__ import annotations

import hashlib
import io
from importlib import resources
from typing import Any

import numpy as np

from vardbio.extras import require

require("PIL", extra="image", what="the image oracles")

from PIL import Image  # noqa: E402

from vardbio.reward.oracle import OracleError, PerDesignOracle  # noqa: E402


def to_unit_image(design: Any, value_range: tuple[float, float]) -> np.ndarray:
    """(H, W) or (H, W, 3) float64 in [0, 1]; OracleError if the design is not an image."""
    import torch

    if isinstance(design, torch.Tensor):
        design = design.detach().cpu().numpy()
    if not isinstance(design, np.ndarray):
        raise OracleError(f"expected an image array, got {type(design).__name__}")
    x = np.asarray(design, dtype=np.float64)
    if x.ndim == 3:
        if x.shape[0] == 1:
            x = x[0]
        elif x.shape[0] == 3:
            x = np.moveaxis(x, 0, -1)
        else:
            raise OracleError(f"expected (H, W) or (C, H, W) with C in (1, 3), got {x.shape}")
    elif x.ndim != 2:
        raise OracleError(f"expected (H, W) or (C, H, W) with C in (1, 3), got {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise OracleError(f"empty image {x.shape}")
    if not np.isfinite(x).all():
        raise OracleError("image has non-finite pixels")
    lo, hi = value_range
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _check_range(value_range) -> tuple[float, float]:
    lo, hi = (float(v) for v in value_range)
    if not lo < hi:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    return lo, hi


class ImageOracle(PerDesignOracle):
    """Base: value range parameter and a pixel hash (rounded to 1e-4) as the cache key."""

    def __init__(self, value_range: tuple[float, float] | list[float] = (-1.0, 1.0)):
        self.value_range = _check_range(value_range)

    def params(self):
        return {"value_range": list(self.value_range)}

    def design_key(self, design):
        import torch

        if isinstance(design, torch.Tensor):
            design = design.detach().cpu().numpy()
        x = np.round(np.asarray(design, dtype=np.float64), 4) + 0.0
        return f"img{x.shape}:" + hashlib.sha1(x.tobytes()).hexdigest()

    def image(self, design) -> np.ndarray:
        return to_unit_image(design, self.value_range)


class Brightness(ImageOracle):
    """Mean pixel intensity in [0, 1] (0 black, 1 white); higher is better."""

    name = "brightness"
    units = "mean intensity (0-1)"

    def score_one(self, design):
        return float(self.image(design).mean())


class JpegCompressibility(ImageOracle):
    """Minus the JPEG file size in kB (1 kB = 1000 bytes): higher is more compressible.

    The image is first upsampled (nearest neighbour, by an integer factor) so its longer
    side is about `size` pixels: at 8x8 the JPEG header would dominate the file size.
    quality: JPEG quality (1-95).
    """

    name = "jpeg_compressibility"
    units = "-kB"

    def __init__(self, size: int = 64, quality: int = 95,
                 value_range: tuple[float, float] | list[float] = (-1.0, 1.0)):
        super().__init__(value_range)
        if size < 8 or not 1 <= quality <= 95:
            raise ValueError("jpeg_compressibility needs size >= 8 and 1 <= quality <= 95")
        self.size, self.quality = int(size), int(quality)

    def params(self):
        return {**super().params(), "size": self.size, "quality": self.quality}

    def score_one(self, design):
        x = np.round(self.image(design) * 255).astype(np.uint8)
        img = Image.fromarray(x)
        factor = max(1, round(self.size / max(x.shape[:2])))
        if factor > 1:
            img = img.resize((x.shape[1] * factor, x.shape[0] * factor), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        return -buf.tell() / 1000.0


def load_digit_classifier() -> dict[str, np.ndarray]:
    """The shipped 64-64-10 MLP weights (from scripts/train_digit_classifier.py)."""
    path = resources.files("vardbio_oracles") / "weights" / "digits_mlp.npz"
    with resources.as_file(path) as p, np.load(p) as z:
        return {k: z[k] for k in z.files}


class DigitProbability(ImageOracle):
    """Probability that a small classifier assigns to `digit` (0-9), in [0, 1], higher is
    better. The classifier is an MLP trained on scikit-learn's 8x8 digits (held-out accuracy
    stored with the weights); images of other sizes are area-resampled to 8x8 grey."""

    name = "digit_probability"
    units = "probability"

    def __init__(self, digit: int = 0, value_range: tuple[float, float] | list[float] = (-1.0, 1.0)):
        super().__init__(value_range)
        if int(digit) != digit or not 0 <= digit <= 9:
            raise ValueError(f"digit must be an integer 0-9, got {digit!r}")
        self.digit = int(digit)
        self._w = None

    def __getstate__(self):
        return {**self.__dict__, "_w": None}

    def params(self):
        return {**super().params(), "digit": self.digit, "weights": "digits_mlp.npz@1"}

    def probabilities(self, design) -> np.ndarray:
        """(10,) class probabilities of one image."""
        if self._w is None:
            self._w = load_digit_classifier()
        x = self.image(design)
        if x.ndim == 3:
            x = x.mean(-1)
        if x.shape != (8, 8):
            img = Image.fromarray(x.astype(np.float32))
            x = np.asarray(img.resize((8, 8), Image.BOX), dtype=np.float64)
        h = np.tanh(x.reshape(64) @ self._w["w1"].T + self._w["b1"])
        logits = h @ self._w["w2"].T + self._w["b2"]
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def score_one(self, design):
        return float(self.probabilities(design)[self.digit])
