"""A diffusers UNet (UNet2DModel or UNet2DConditionModel) as a vardbio DiffusionModel.

    from diffusers import UNet2DModel, DDIMScheduler
    from vardbio_models.diffusers_adapter import from_diffusers
    model = from_diffusers(unet, DDIMScheduler.from_pretrained(path), sampling_steps=50,
                           eta=1.0, lora={"rank": 8})

The scheduler contributes its noise schedule (its β_t, whatever `beta_schedule` produced
them) and its prediction type; sampling is vardbio's DDIM(η) on GaussianProcess with those
β_t, so every reverse step is an explicit Gaussian with σ > 0 when η > 0, and VARD's KL
and DDPO's log-probs are exact. Differences from diffusers' DDIMScheduler.step: vardbio's
time grid runs evenly from T-1 to 0 (no `timestep_spacing`/`steps_offset`), and x0
clipping/thresholding is not applied. 'v_prediction' outputs are converted to ε.

LoRA (through peft) freezes the UNet and trains low-rank adapters only, which is how a
large pretrained UNet is fine-tuned on a GPU. Installing: `pip install 'vardbio[diffusers]'`.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vardbio.extras import require
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.checkpoint import save_model
from vardbio.model.plugin import ModelPlugin
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.value.heads import ValueHead
from vardbio_models.image import (
    SIZES, ImagePlugin, ImageValueNet, VALUE_HEAD, decode_images, pretrain_on_digits,
)

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "eps"}
LORA_DEFAULTS = {"rank": 4, "alpha": None, "dropout": 0.0, "target_modules": None}
# Linear and conv layers of diffusers' ResNet and attention blocks that LoRA adapts by default.
LORA_TARGETS = ("conv1", "conv2", "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out")


def _require_diffusers():
    return require("diffusers", extra="diffusers", what="the diffusers adapter")


def scheduler_betas(scheduler: Any) -> tuple[list[float], str]:
    """(β_0 .. β_{T-1} as floats, diffusers prediction type) of a diffusers scheduler or of
    its config mapping (num_train_timesteps, beta_start, beta_end, beta_schedule,
    trained_betas, prediction_type, ...)."""
    diffusers = _require_diffusers()
    if isinstance(scheduler, dict):
        known = set(inspect.signature(diffusers.DDIMScheduler.__init__).parameters) - {"self"}
        unknown = {k for k in scheduler if not k.startswith("_")} - known
        if unknown:
            raise ValueError(f"unknown DDIM scheduler settings {sorted(unknown)}")
        scheduler = diffusers.DDIMScheduler.from_config(scheduler)
    betas = getattr(scheduler, "betas", None)
    if not isinstance(betas, torch.Tensor):
        raise ValueError(f"{type(scheduler).__name__} has no betas tensor: pass a DDPM/DDIM-style scheduler")
    prediction = scheduler.config.prediction_type
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type '{prediction}'; expected one of {sorted(PREDICTION_TYPES)}")
    return betas.double().tolist(), prediction



class DiffusersDenoiser(nn.Module):
    """vardbio's denoiser interface around a diffusers UNet.

    forward(x_t (B, C, H, W), t (B,) in [0, 1], mask ignored) -> (B, C, H, W): ε (or x0 for
    'sample' prediction). t maps to the integer timestep round(t · (T - 1)), exactly the
    training time vardbio's sampler visits. A conditional UNet gets `condition` (S, D), a fixed
    encoder_hidden_states (e.g. a prompt embedding) broadcast over the batch; it is a
    buffer, so checkpoints carry it.
    """

    def __init__(self, unet: nn.Module, alpha_bar: torch.Tensor, prediction_type: str,
                 condition: torch.Tensor | None = None):
        super().__init__()
        self.unet = unet
        self.prediction_type = prediction_type
        self.num_train_steps = len(alpha_bar)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)
        self.conditional = condition is not None
        if condition is not None:
            if condition.dim() != 2:
                raise ValueError(f"condition must be (tokens, dim), got shape {tuple(condition.shape)}")
            self.register_buffer("condition", condition.float())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        steps = (t.double() * (self.num_train_steps - 1)).round().long().clamp(0, self.num_train_steps - 1)
        if self.conditional:
            context = self.condition.unsqueeze(0).expand(x_t.shape[0], -1, -1)
            out = self.unet(x_t, steps, encoder_hidden_states=context).sample
        else:
            out = self.unet(x_t, steps).sample
        if self.prediction_type == "v_prediction":
            a = self.alpha_bar.to(x_t.device)[steps].view(-1, *([1] * (x_t.dim() - 1)))
            out = a.sqrt() * out + (1 - a).sqrt() * x_t  # v -> ε
        return out


def add_lora(unet: nn.Module, lora: dict[str, Any]) -> list[str]:
    """Inject peft LoRA adapters into `unet` and freeze everything else; returns the adapted
    module names. lora: rank, alpha (default = rank), dropout, target_modules (default:
    the LORA_TARGETS present in the UNet)."""
    peft = require("peft", extra="diffusers", what="LoRA")
    LoraConfig, inject_adapter_in_model = peft.LoraConfig, peft.inject_adapter_in_model
    unknown = set(lora) - set(LORA_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown LoRA options {sorted(unknown)}; valid: {sorted(LORA_DEFAULTS)}")
    opts = {**LORA_DEFAULTS, **lora}
    if int(opts["rank"]) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {opts['rank']}")
    names = [n for n, _ in unet.named_modules()]
    targets = list(opts["target_modules"] or LORA_TARGETS)
    present = [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]
    if not present:
        raise ValueError(f"none of the LoRA target modules {targets} exist in {type(unet).__name__}")
    config = LoraConfig(r=int(opts["rank"]), lora_alpha=float(opts["alpha"] or opts["rank"]),
                        lora_dropout=float(opts["dropout"]), target_modules=present)
    inject_adapter_in_model(config, unet)
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
    return present


def _json_config(unet: nn.Module) -> dict[str, Any]:
    """The UNet's constructor config as plain JSON types, private keys dropped."""
    return json.loads(json.dumps({k: v for k, v in dict(unet.config).items() if not k.startswith("_")}))


def from_diffusers(unet: nn.Module, scheduler: Any, sampling_steps: int = 50, eta: float = 1.0,
                   lora: dict[str, Any] | None = None, condition: torch.Tensor | None = None,
                   spec_options: dict[str, Any] | None = None) -> DiffusionModel:
    """A DiffusionModel sampling `unet` with DDIM(η) on the scheduler's noise schedule.

    unet: a diffusers UNet2DModel or UNet2DConditionModel (states (B, C, H, W), images in
        [-1, 1]); scheduler: a diffusers DDPM/DDIM scheduler or its config mapping;
    eta: must be > 0 (the KL and log-probs need a stochastic step); lora: LoRA options
        (see add_lora) or None to train every weight; condition: (S, D) encoder hidden
        states for a UNet2DConditionModel (required there, refused otherwise).
    """
    kind = type(unet).__name__
    if kind not in UNET_CLASSES:
        raise ValueError(f"expected a diffusers {' or '.join(UNET_CLASSES)}, got {kind}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0: a deterministic DDIM step (eta = 0) has no density, got {eta}")
    if (kind == "UNet2DConditionModel") != (condition is not None):
        raise ValueError("a UNet2DConditionModel needs `condition` (S, D) and a UNet2DModel takes none")
    betas, prediction = scheduler_betas(scheduler)
    process = GaussianProcess(GaussianProcessConfig(
        num_train_steps=len(betas), prediction=PREDICTION_TYPES[prediction],
        sampling_steps=sampling_steps, eta=eta, betas=betas))
    if lora:
        add_lora(unet, lora)
    denoiser = DiffusersDenoiser(unet, process.alpha_bar, prediction, condition)
    cfg = unet.config
    size = cfg.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    channels = cfg.in_channels
    if cfg.out_channels != channels:
        raise ValueError(f"the UNet maps {channels} to {cfg.out_channels} channels; a denoiser needs equal counts")
    spec = {"plugin": "diffusers", "options": spec_options if spec_options is not None else {
        "unet_class": kind, "unet_config": _json_config(unet), "lora": lora or None,
        "condition_shape": None if condition is None else list(condition.shape)}}
    return DiffusionModel(denoiser, process, lambda n, g: Layout((n, channels, height, width)),
                          decode_images, spec=spec)


DEFAULTS = {"unet_class": "UNet2DModel", "unet_config": None, "pretrained": None, "subfolder": None,
            "scheduler": {}, "sampling_steps": 20, "eta": 1.0, "lora": None,
            "condition_shape": None, "condition_file": None}
DATA = {"eval_samples": 256}
# the shared loop (PretrainConfig): 5 % warm-up, cosine to 0, weight average, no clipping
TRAINING = {"steps": 2000, "batch_size": 128, "lr": 2e-3, "warmup": 100, "ema": 0.999, "max_grad_norm": 0.0}
TINY_UNET = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
             "block_out_channels": [8, 16], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
             "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 4, "attention_head_dim": 4}


class DiffusersPlugin(ModelPlugin):
    """Any diffusers UNet2DModel / UNet2DConditionModel with a DDIM scheduler's schedule.

    Options: unet_class; unet_config (the UNet's constructor settings) or pretrained (a
    local directory written by save_pretrained, read with local_files_only; subfolder
    optional); scheduler (DDIM scheduler settings, or a local directory of a saved
    scheduler); sampling_steps; eta (> 0); lora (see add_lora, or null); for a conditional
    UNet condition_shape [S, D] and optionally condition_file (.pt or .npy of that shape;
    zeros when absent). Pretraining: eval_samples and the shared loop's settings
    (vardbio.model.training.PretrainConfig: steps, batch_size, lr, warmup, ema, ...).
    """

    name = "diffusers"
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"unet_config": TINY_UNET, "sampling_steps": 4, "lora": {"rank": 2},
                     "scheduler": {"num_train_timesteps": 100, "beta_schedule": "scaled_linear",
                                   "beta_start": 0.00085, "beta_end": 0.012}},)

    def check_options(self, opts: dict[str, Any]) -> None:
        if opts["unet_class"] not in UNET_CLASSES:
            raise ValueError(f"unet_class must be one of {UNET_CLASSES}, got '{opts['unet_class']}'")
        if opts["unet_config"] is None and opts["pretrained"] is None:
            raise ValueError("the diffusers model needs unet_config (constructor settings) or pretrained (a local directory)")

    def _unet(self, opts: dict[str, Any]) -> nn.Module:
        diffusers = _require_diffusers()
        cls = getattr(diffusers, opts["unet_class"])
        if opts["pretrained"] is not None:
            path = Path(opts["pretrained"])
            if not path.is_dir():
                raise FileNotFoundError(f"pretrained UNet directory not found: {path}")
            return cls.from_pretrained(path, subfolder=opts["subfolder"], local_files_only=True)
        return cls(**opts["unet_config"])

    def _scheduler(self, opts: dict[str, Any]) -> Any:
        scheduler = opts["scheduler"]
        if isinstance(scheduler, (str, Path)):
            diffusers = _require_diffusers()
            path = Path(scheduler)
            if not path.is_dir():
                raise FileNotFoundError(f"scheduler directory not found: {path}")
            return diffusers.DDIMScheduler.from_pretrained(path, local_files_only=True)
        return dict(scheduler or {})

    def _condition(self, opts: dict[str, Any]) -> torch.Tensor | None:
        if opts["unet_class"] != "UNet2DConditionModel":
            return None
        if opts["condition_file"] is not None:
            path = Path(opts["condition_file"])
            data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu")
            cond = torch.as_tensor(np.asarray(data), dtype=torch.float32)
        elif opts["condition_shape"] is not None:
            cond = torch.zeros(*[int(s) for s in opts["condition_shape"]])
        else:
            raise ValueError("a UNet2DConditionModel needs condition_shape [tokens, dim] or condition_file")
        if opts["condition_shape"] is not None and list(cond.shape) != list(opts["condition_shape"]):
            raise ValueError(f"condition_file holds shape {list(cond.shape)}, condition_shape says {opts['condition_shape']}")
        return cond

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        unet = self._unet(opts)
        cond = self._condition(opts)
        lora = dict(opts["lora"]) if opts["lora"] else None
        spec = {"unet_class": opts["unet_class"], "unet_config": _json_config(unet), "lora": lora,
                "condition_shape": None if cond is None else list(cond.shape)}
        return from_diffusers(unet, self._scheduler(opts), opts["sampling_steps"], opts["eta"],
                              lora, cond, spec_options=spec)

    def load(self, options: dict[str, Any], checkpoint: str | Path | None = None) -> DiffusionModel:
        """With no checkpoint, a `pretrained` UNet directory supplies the weights."""
        if checkpoint is None and options.get("pretrained") is not None:
            return self.build(options)
        return super().load(options, checkpoint)

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        unknown = set(options) - set(VALUE_HEAD)
        if unknown:
            raise ValueError(f"unknown value-head options {sorted(unknown)}; valid: {sorted(VALUE_HEAD)}")
        channels = model.denoiser.unet.config.in_channels
        return ValueHead(ImageValueNet(channels, **{**VALUE_HEAD, **options}))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        raise ValueError("the diffusers adapter ships no weights: set options.pretrained to a local "
                         "diffusers UNet directory, or model.checkpoint to a vardbio checkpoint "
                         "(e.g. from `vardbio pretrain model=image_diffusers out=<path>`)")

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train the UNet on scikit-learn's digits (the UNet must take 1 channel at 8 or 16 px)."""
        opts, data, config = self.split(options)
        torch.manual_seed(seed)
        model = self.build(opts)
        cfg = model.denoiser.unet.config
        if cfg.in_channels != 1 or cfg.sample_size not in SIZES:
            raise ValueError(f"pretraining on digits needs a 1-channel UNet with sample_size in {SIZES}, "
                             f"got {cfg.in_channels} channels at {cfg.sample_size}")
        if model.denoiser.conditional:
            raise ValueError("pretraining on digits is unconditional: use unet_class UNet2DModel")
        model, metrics = pretrain_on_digits(model, cfg.sample_size, config, out_path, seed, int(data["eval_samples"]))
        metrics.update({"data": data, "seed": seed})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    # images like the image plugin's: the same design files, gallery and summary entries
    write_designs = ImagePlugin.write_designs
    gallery = ImagePlugin.gallery
    summarize = ImagePlugin.summarize


plugin = DiffusersPlugin()
