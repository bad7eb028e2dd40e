"""Image domain: a small UNet diffusion model of scikit-learn's handwritten digits.

States are image batches (B, 1, S, S) with pixels in [-1, 1] (S = 8, the digits' own size,
or 16, the digits upsampled bilinearly). A design is a numpy array (S, S) in [-1, 1]: the
format of vardbio_oracles.image. The shipped checkpoint models/weights/image_digits8.pt is
trained by `vardbio pretrain model=image` (its metrics are stored inside it); the
16x16 variant is `vardbio pretrain model=image16` (not shipped). Training runs the shared
loop (vardbio.model.training.pretrain_loop).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vardbio.extras import require
from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.evaluation import DomainSummary, Evaluation, Metric
from vardbio.model.plugin import ModelPlugin
from vardbio.model.training import PretrainConfig, pretrain_loop, uniform_batches
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.value.heads import ValueHead

WEIGHTS = Path(__file__).parent / "weights"
SIZES = (8, 16)
GRID_MAX = 64  # designs drawn in a PNG grid


def digits_dataset(size: int = 16) -> torch.Tensor:
    """scikit-learn's 1,797 handwritten digits as (1797, 1, size, size) float32 in [-1, 1].

    The 8x8 originals (grey levels 0-16) are upsampled bilinearly when size is 16.
    """
    if size not in SIZES:
        raise ValueError(f"image size must be one of {SIZES}, got {size}")
    datasets = require("sklearn.datasets", extra="image", what="the digits training set")

    x = torch.as_tensor(datasets.load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2 - 1
    if size != 8:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(-1, 1)
    return x


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the time embedding added in between:
    (B, c_in, H, W), (B, emb) -> (B, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """ε- (or x0-) prediction UNet: x_t (B, C, S, S), t (B,) in [0, 1] -> (B, C, S, S).

    One residual block per resolution on the way down and two on the way up (the second
    after concatenating the skip), resolutions halved len(channel_mults) - 1 times.
    """

    def __init__(self, channels: int = 1, base_channels: int = 32,
                 channel_mults: Sequence[int] = (1, 2), time_dim: int = 64):
        super().__init__()
        widths = [base_channels * m for m in channel_mults]
        emb = 2 * time_dim
        self.time = nn.Sequential(TimeEmbedding(time_dim), mlp([time_dim, emb, emb]))
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            self.down.append(ResBlock(c, w, emb))
            c = w
            if i < len(widths) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c, emb)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(c + w, w, emb))
            c = w
            if i > 0:
                self.unpool.append(nn.Conv2d(c, widths[i - 1], 3, padding=1))
                c = widths[i - 1]
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(t)
        h = self.stem(x_t)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if j < len(self.unpool):
                h = self.unpool[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


class ImageValueNet(nn.Module):
    """Value network for image states: a strided conv net whose features are scaled and
    shifted by the noise level (FiLM), pooled, then an MLP: (B, C, S, S), (B,) -> (B,)."""

    def __init__(self, channels: int = 1, width: int = 32, time_dim: int = 32, hidden: int = 64):
        super().__init__()
        self.time = nn.Sequential(TimeEmbedding(time_dim), mlp([time_dim, hidden, 4 * width]))
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.head = mlp([2 * width + time_dim, hidden, 1])
        self.time_dim = time_dim

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        scale, shift = self.time(t)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.conv1(x_t))
        h = F.silu(self.conv2(h) * (1 + scale) + shift)
        h = F.silu(self.conv3(h)).mean(dim=(2, 3))
        feats = self.time[0](t)
        return self.head(torch.cat([h, feats], dim=-1)).squeeze(-1)


def decode_images(x0: torch.Tensor, mask: torch.Tensor | None = None) -> list[np.ndarray]:
    """(B, C, S, S) states -> B float64 arrays (S, S) (or (C, S, S) for C > 1) clipped to [-1, 1]."""
    x = x0.detach().double().clamp(-1, 1).numpy()
    return [img[0] if img.shape[0] == 1 else img for img in x]


def images_array(designs: Sequence[Any]) -> np.ndarray:
    """Designs (each (S, S) or (C, S, S)) stacked as (n, S, S) or (n, C, S, S) float32;
    ValueError when they are not images of one shape."""
    arrays = [np.asarray(d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else d, dtype=np.float32)
              for d in designs]
    if not arrays:
        raise ValueError("no designs to write")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim not in (2, 3):
        raise ValueError(f"designs must be images of one shape (S, S) or (C, S, S), got shapes {sorted(shapes)}")
    return np.stack(arrays)


def write_image_designs(designs: Sequence[Any], rewards: np.ndarray | None, out_stem: Path) -> list[Path]:
    """Write <stem>.png (a grid of the first 64 designs, titled with the mean reward),
    <stem>.npy (all designs, (n, S, S) float32 in [-1, 1]) and <stem>.csv (index, reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    images = images_array(designs)
    n = len(images)
    if rewards is not None:
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(rewards) != n:
            raise ValueError(f"{len(rewards)} rewards for {n} designs")
    npy = out_stem.with_suffix(".npy")
    np.save(npy, images)
    csv_path = out_stem.with_suffix(".csv")
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index"] + ([] if rewards is None else ["reward"]))
        for i in range(n):
            writer.writerow([i] + ([] if rewards is None else [f"{rewards[i]:.6g}"]))
    shown = min(n, GRID_MAX)
    cols = int(np.ceil(np.sqrt(shown)))
    rows = int(np.ceil(shown / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < shown:
            img = images[i] if images.ndim == 3 else np.moveaxis(images[i], 0, -1)
            img = (np.clip(img, -1, 1) + 1) / 2
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    title = f"{out_stem.name}: {shown} of {n} designs"
    if rewards is not None and np.isfinite(rewards).any():
        title += f", mean reward {np.nanmean(rewards):.4g}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    png = out_stem.with_suffix(".png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [png, npy, csv_path]


def pixel_diversity_metric(evaluation: Evaluation) -> Metric:
    """pixel_diversity of the reference's and of the fine-tuned model's images."""
    return Metric("pixel_diversity", pixel_diversity(evaluation.final.states),
                  pixel_diversity(evaluation.reference.states),
                  label="diversity (mean pairwise RMS pixel distance)", units="intensity on [-1, 1]",
                  higher_is_better=True)


def pixel_diversity(states: torch.Tensor, limit: int = 512) -> float:
    """Mean pairwise RMS pixel distance between images (B, ...) (the first `limit`)."""
    x = states[:limit].detach().double().clamp(-1, 1).flatten(1)
    if len(x) < 2:
        return float("nan")
    d = torch.cdist(x, x) / np.sqrt(x.shape[1])
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


def pretrain_on_digits(model: DiffusionModel, size: int, config: PretrainConfig, out_path: Path,
                       seed: int, eval_samples: int) -> tuple[DiffusionModel, dict[str, Any]]:
    """Train a 1-channel image model on the digits at `size` px with the shared loop, then
    measure `eval_samples` samples (sample_quality). Returns (the trained model, metrics)."""
    data = digits_dataset(size)
    generator = torch.Generator().manual_seed(seed)
    model, metrics = pretrain_loop(model, uniform_batches(data, config.batch_size, generator), config, out_path,
                                   generator)
    started = time.perf_counter()
    samples = model.rollout(eval_samples, torch.Generator().manual_seed(seed + 1)).final
    held = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))]
    metrics.update({"sample_seconds": round(time.perf_counter() - started, 1),
                    "parameters": sum(p.numel() for p in model.denoiser.parameters()),
                    **sample_quality(samples, held)})
    return model, metrics


def sample_quality(samples: torch.Tensor, data: torch.Tensor) -> dict[str, Any]:
    """How digit-like samples (B, 1, S, S) are, against the training data (N, 1, S, S).

    Uses the shipped digit classifier of vardbio_oracles.image: the mean top-class
    probability and the share above 0.9 (for samples and for real digits), the class
    histogram of samples, and the mean distance to the nearest training image beside the
    same figure for held-apart real digits (memorisation check).
    """
    from vardbio_oracles.image import DigitProbability

    clf = DigitProbability(0)

    def probs(x: torch.Tensor) -> np.ndarray:
        return np.stack([clf.probabilities(img) for img in decode_images(x)])

    p_s, p_d = probs(samples), probs(data[: len(samples)])
    s_flat, d_flat = samples.clamp(-1, 1).flatten(1), data.flatten(1)
    rms = np.sqrt(d_flat.shape[1])
    nn_sample = float(torch.cdist(s_flat, d_flat).min(1).values.mean() / rms)
    half = len(d_flat) // 2
    nn_real = float(torch.cdist(d_flat[:half], d_flat[half:]).min(1).values.mean() / rms)
    return {
        "classifier_confidence_samples": round(float(p_s.max(1).mean()), 4),
        "classifier_confidence_data": round(float(p_d.max(1).mean()), 4),
        "confident_fraction_samples": round(float((p_s.max(1) > 0.9).mean()), 4),
        "confident_fraction_data": round(float((p_d.max(1) > 0.9).mean()), 4),
        "class_histogram_samples": np.bincount(p_s.argmax(1), minlength=10).tolist(),
        "nearest_train_rms_samples": round(nn_sample, 4),
        "nearest_train_rms_real_halves": round(nn_real, 4),
        "pixel_diversity_samples": round(pixel_diversity(samples), 4),
        "pixel_diversity_data": round(pixel_diversity(data), 4),
    }


DEFAULTS = {"size": 8, "base_channels": 32, "channel_mults": [1, 2], "time_dim": 64,
            "num_train_steps": 1000, "schedule": "linear", "prediction": "eps",
            "sampling_steps": 20, "eta": 1.0}
ARCHITECTURE = ("size", "base_channels", "channel_mults", "time_dim")
DATA = {"eval_samples": 512}
# the shared loop (PretrainConfig): 5 % warm-up, cosine to 0, weight average, no clipping
TRAINING = {"steps": 4000, "batch_size": 128, "lr": 2e-3, "warmup": 200, "ema": 0.999, "max_grad_norm": 0.0}
VALUE_HEAD = {"width": 32, "time_dim": 32, "hidden": 64}


class ImagePlugin(ModelPlugin):
    """Digits images: a UNet with Gaussian diffusion (DDIM(η) sampling, ε-prediction)."""

    name = "image"
    gallery = {".png": "images"}
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"size": 8, "base_channels": 8, "sampling_steps": 4},
                    {"size": 16, "base_channels": 8, "channel_mults": [1, 2, 2], "sampling_steps": 4})

    def check_options(self, merged: dict[str, Any]) -> None:
        if merged["size"] not in SIZES:
            raise ValueError(f"image size must be one of {SIZES}, got {merged['size']}")
        mults = list(merged["channel_mults"])
        if not mults or any(int(m) != m or m < 1 for m in mults):
            raise ValueError(f"channel_mults must be positive integers, got {mults}")
        if merged["size"] % (2 ** (len(mults) - 1)):
            raise ValueError(f"size {merged['size']} cannot be halved {len(mults) - 1} times")
        if merged["base_channels"] < 1 or merged["time_dim"] < 2:
            raise ValueError("base_channels must be >= 1 and time_dim >= 2")
        merged["channel_mults"] = [int(m) for m in mults]

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        process = GaussianProcess(GaussianProcessConfig.from_options(opts))
        denoiser = UNet(1, opts["base_channels"], opts["channel_mults"], opts["time_dim"])
        size = opts["size"]
        return DiffusionModel(denoiser, process, lambda n, g: Layout((n, 1, size, size)), decode_images,
                              spec={"plugin": self.name, "options": {k: opts[k] for k in ARCHITECTURE}})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        unknown = set(options) - set(VALUE_HEAD)
        if unknown:
            raise ValueError(f"unknown image value-head options {sorted(unknown)}; valid: {sorted(VALUE_HEAD)}")
        return ValueHead(ImageValueNet(1, **{**VALUE_HEAD, **options}))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / f"image_digits{self.options(options)['size']}.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        opts, data, config = self.split(options)
        torch.manual_seed(seed)
        model, metrics = pretrain_on_digits(self.build(opts), opts["size"], config, out_path, seed,
                                            int(data["eval_samples"]))
        metrics.update({"options": opts, "data": data, "seed": seed})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        return write_image_designs(designs, rewards, out_stem)

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """Pixel diversity (pixel_diversity_metric) before and after fine-tuning."""
        return DomainSummary([pixel_diversity_metric(evaluation)])

plugin = ImagePlugin()
