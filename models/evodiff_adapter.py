"""EvoDiff's OA-DM protein network (Alamdari et al. 2023) as a vardbio masked diffusion model.

EvoDiff-Seq OA-DM ("order-agnostic autoregressive diffusion") is a dilated-convolution
ByteNet (`evodiff.model.ByteNetLMTime`, no time input) trained on UniRef50 to predict the
amino acid at masked positions from the unmasked rest, whatever the fraction masked. That
is the denoiser of an absorbing-state diffusion, so the adapter wraps it in the core's
`vardbio.processes.masked.MaskedDiffusion` and VARD, DDPO, best-of-N, SVDD, guidance and
the value heads use it unchanged.

Tokens. Our state is one-hot (B, L, 21): channels 0..19 are the amino acids in
`ACDEFGHIKLMNPQRSTVWY` order (vardbio_models.protein_sequence.ALPHABET), channel 20 is the
mask. EvoDiff's tokenizer (`evodiff.utils.Tokenizer()`, alphabet
`sequence_models.constants.MSA_ALPHABET`: the 20 canonical letters, BZX, JOU, gap '-', stop,
mask '#', start, pad '!') gives each channel an EvoDiff token id (TOKEN_IDS: 0..19 and the
mask id 28). The denoiser embeds a state as state @ E[TOKEN_IDS] (E: EvoDiff's token
embedding; for a one-hot state exactly EvoDiff's own lookup, and differentiable for the
relaxed one-hot draws VARD sends), runs EvoDiff's up-projection, ByteNet blocks, final
LayerNorm and decoder, and returns the decoder's logits of the 20 canonical amino acids
only (B, L, 20): the ambiguous letters, gap and special tokens are never sampled (EvoDiff's
own sampler keeps the first 21 tokens, B included). The mask row of E is EvoDiff's padding
row: it stays fixed, as nn.Embedding(padding_idx=mask) keeps it in EvoDiff.

Weights. Nothing is downloaded by default and no weights ship with vardbio. Give either
- `weights`: a local copy of EvoDiff's released checkpoint (`oaar-38M.tar`, `oaar-640M.tar`
  from https://zenodo.org/record/8045076), or campaign.model.checkpoint pointing at that
  `.tar` file. The file is what EvoDiff's train.py writes with torch.save: a dict with
  `model_state_dict` (keys prefixed `module.` by DistributedDataParallel), and `step`,
  `tokens`, `epoch`, `optimizer_state_dict`, `scheduler_state_dict`, of which only the model
  weights are read (torch.load with weights_only=True, memory-mapped; a bare state dict is
  read too). `trust_checkpoint: true` allows a full unpickling for a file that holds other
  Python objects; only for files you trust.
- `download: true`: EvoDiff's own loader (`evodiff.pretrained.OA_DM_38M` / `OA_DM_640M`)
  fetches the file from Zenodo into torch's hub cache; it needs internet and the complete
  evodiff install (see below); afterwards the cached `.tar` can be given as `weights`.
A vardbio checkpoint (a run's model_final.pt) loads as for any plugin.

Installing: `pip install --no-deps evodiff sequence-models fair-esm` (the `vardbio[evodiff]`
extra names the same packages with their dependencies, which pin numpy < 2 and pull
mdanalysis, pandas and seaborn). evodiff's package __init__ imports all of its modules,
among them `pkg_resources` (gone from setuptools 81 on), pandas and seaborn; the adapter
therefore loads only the network module, `evodiff/model.py`, from the installed package
(it needs sequence-models and fair-esm) and never runs that __init__. The evodiff wheel
also installs a top-level package named `config` (the model size JSON files).

Presets copy EvoDiff's config38M.json / config640M.json: d_embed 8, kernel 5, r 128, GELU;
38M: d_model 1024, 16 layers, slim; 640M: d_model 1280, 56 layers, not slim. Any
architecture key given overrides its preset value (tests use a tiny ByteNet).

LoRA (`lora: {rank, alpha, dropout, target_modules}`, through peft) freezes the network
and trains low-rank adapters on the position-wise 1x1 convolutions of every ByteNet block
(`sequence1.2.conv`, `sequence2.2.conv`; the dilated convolution is not a target). For the
640M model on a GPU see README.md (accelerate, bf16).
"""
from __future__ import annotations

import importlib.util
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vardbio.model.checkpoint import load_weights, read_checkpoint
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.plugin import ModelPlugin
from vardbio.nn import TokenConvValueNet
from vardbio.processes.masked import MaskedDiffusion, MaskedDiffusionConfig
from vardbio.value.heads import ValueHead
from vardbio_models.diffusers_adapter import add_lora as inject_lora
from vardbio_models.protein_sequence import ALPHABET, VOCAB, ProteinSequencePlugin, decode_states

RELEASES = "https://zenodo.org/record/8045076"
PRESETS = {
    "oaar-38M": {"d_embed": 8, "d_model": 1024, "n_layers": 16, "kernel_size": 5, "r": 128,
                 "slim": True, "activation": "gelu"},
    "oaar-640M": {"d_embed": 8, "d_model": 1280, "n_layers": 56, "kernel_size": 5, "r": 128,
                  "slim": False, "activation": "gelu"},
}
ARCH_KEYS = ("d_embed", "d_model", "n_layers", "kernel_size", "r", "slim", "activation")
DEFAULTS = {"preset": "oaar-38M", **{k: None for k in ARCH_KEYS}, "length": 100, "sampling_steps": 100,
            "schedule": "linear", "relax_temperature": 0.1, "weights": None, "download": False,
            "trust_checkpoint": False, "lora": None}
LORA_DEFAULTS = {"rank": 8, "alpha": None, "dropout": 0.0, "target_modules": None}
LORA_TARGETS = ("sequence1.2.conv", "sequence2.2.conv")
EXTRA = "pip install --no-deps evodiff sequence-models fair-esm (or 'vardbio[evodiff]')"
_MODULE = "vardbio_models._evodiff_network"


def evodiff_network_module():
    """evodiff/model.py of the installed evodiff package, loaded without evodiff/__init__.py
    (which imports pkg_resources, pandas, seaborn, ...); ImportError naming the install."""
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    spec = importlib.util.find_spec("evodiff")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the evodiff model needs EvoDiff's network code: {EXTRA}")
    path = Path(list(spec.submodule_search_locations)[0]) / "model.py"
    module_spec = importlib.util.spec_from_file_location(_MODULE, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[_MODULE] = module
    try:
        module_spec.loader.exec_module(module)
    except ImportError as err:
        del sys.modules[_MODULE]
        raise ImportError(f"EvoDiff's network module {path} needs {err.name}: {EXTRA}") from err
    return module


def evodiff_tokens() -> tuple[list[int], int, int]:
    """(EvoDiff token id of each of our 21 channels, mask id, number of EvoDiff tokens), from
    the alphabet and mask symbol EvoDiff's Tokenizer uses by default."""
    try:
        from sequence_models.constants import MASK, MSA_ALPHABET
    except ImportError as err:
        raise ImportError(f"the evodiff model needs sequence-models: {EXTRA}") from err
    mask_id = MSA_ALPHABET.index(MASK)
    return [MSA_ALPHABET.index(a) for a in ALPHABET] + [mask_id], mask_id, len(MSA_ALPHABET)


def build_network(arch: dict[str, Any]) -> nn.Module:
    """An OA-DM ByteNetLMTime as EvoDiff's load_sequence_checkpoint builds it (no time
    input, final LayerNorm, untied decoder, the mask token as padding index), random weights."""
    module = evodiff_network_module()
    _, mask_id, n_tokens = evodiff_tokens()
    return module.ByteNetLMTime(n_tokens, arch["d_embed"], arch["d_model"], arch["n_layers"],
                                arch["kernel_size"], arch["r"], causal=False, padding_idx=mask_id,
                                rank=None, dropout=0.0, tie_weights=False, final_ln=True,
                                slim=arch["slim"], activation=arch["activation"], timesteps=None)


class OADMDenoiser(nn.Module):
    """vardbio's denoiser interface around an OA-DM network.

    forward(x_t (B, L, 21) one-hot or relaxed, t (B,) ignored (OA-DM has no time input),
    mask (B, L) or None) -> logits (B, L, 20) over ALPHABET.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        token_ids, mask_id, _ = evodiff_tokens()
        self.mask_id = mask_id
        self.register_buffer("token_ids", torch.tensor(token_ids[:VOCAB]), persistent=False)

    def embedding_rows(self) -> torch.Tensor:
        """(21, d_embed): EvoDiff's embedding of each of our channels (mask row fixed)."""
        table = self.network.embedder.embedder.weight
        return torch.cat([table[self.token_ids], table[self.mask_id:self.mask_id + 1].detach()], 0)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.embedding_rows()
        body = self.network.embedder
        e = body.up_embedder(x_t.to(rows.dtype) @ rows)
        input_mask = None if mask is None else mask.unsqueeze(-1).to(e.dtype)
        e = body._convolve(e, input_mask=input_mask)
        logits = self.network.decoder(self.network.last_norm(e))
        return logits[..., self.token_ids].float()


def read_released_weights(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The network weights in one of EvoDiff's released checkpoints (or a bare state dict),
    with DistributedDataParallel's `module.` prefix removed. ValueError for a file that is not
    one; FileNotFoundError saying where the weights are published for a missing one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"EvoDiff weights not found at {path}: download oaar-38M.tar or oaar-640M.tar "
                                f"from {RELEASES} (EvoDiff's Zenodo record) and give its path")
    with path.open("rb") as fh:
        head = fh.read(4)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # a zip archive or a legacy pickle
        raise ValueError(f"{path} is not a torch checkpoint file (neither torch's zip format nor its legacy one)")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=not trust)  # legacy (non-zip) file
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds Python objects beyond tensors and plain values, so it is not read "
                         "with weights_only=True; if you trust the file set options.trust_checkpoint=true "
                         f"({str(err).splitlines()[0]})") from err
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError) as err:
        raise ValueError(f"{path} is not a torch checkpoint file: {str(err).splitlines()[0]}") from err
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no EvoDiff model weights (expected a dict with 'model_state_dict', "
                         "as EvoDiff's released .tar files, or a state dict)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def describe_weights(state: dict[str, torch.Tensor]) -> str:
    """'n layers, d_model m' read off a ByteNet state dict (for error messages)."""
    layers = {k.split(".")[2] for k in state if k.startswith("embedder.layers.")}
    width = state.get("embedder.up_embedder.conv.weight")
    d_model = "?" if width is None else int(width.shape[0])
    return f"{len(layers)} ByteNet layers of width {d_model}"


def load_network_weights(network: nn.Module, state: dict[str, torch.Tensor], arch: dict[str, Any],
                         source: str) -> None:
    """Copy `state` into `network`; ValueError naming what does not fit."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = [line.strip() for line in str(err).splitlines()[1:3] if line.strip()]
        raise ValueError(f"the weights in {source} ({describe_weights(state)}) do not fit the built "
                         f"architecture ({arch['n_layers']} layers of width {arch['d_model']}): check "
                         f"options.preset (oaar-38M or oaar-640M); {' '.join(first)[:300]}") from err


def download_weights(preset: str) -> dict[str, torch.Tensor]:
    """EvoDiff's own loader (internet, full evodiff install): the released OA-DM weights."""
    try:
        from evodiff.pretrained import OA_DM_38M, OA_DM_640M
    except ImportError as err:
        raise ImportError("options.download uses EvoDiff's own loader, which needs the complete evodiff "
                          "package and its dependencies (pip install evodiff; its import also needs "
                          f"pkg_resources, i.e. setuptools < 81): {err}. Or download the file from "
                          f"{RELEASES} and set options.weights to it") from err
    loaders = {"oaar-38M": OA_DM_38M, "oaar-640M": OA_DM_640M}
    if preset not in loaders:
        raise ValueError(f"options.download needs preset oaar-38M or oaar-640M, got {preset!r}")
    return loaders[preset]()[0].state_dict()


def add_lora(network: nn.Module, lora: dict[str, Any]) -> list[str]:
    """Inject peft LoRA adapters into the network's position-wise convolutions and freeze
    everything else (the diffusers adapter's add_lora with this network's defaults); returns
    the target names. lora: rank (default 8), alpha (default = rank), dropout,
    target_modules (default LORA_TARGETS)."""
    opts = {**LORA_DEFAULTS, **lora}
    opts["target_modules"] = list(opts["target_modules"] or LORA_TARGETS)
    return inject_lora(network, opts)


class EvoDiffPlugin(ModelPlugin):
    """EvoDiff OA-DM sequences of `length` residues (see the module docstring).

    Options: preset (oaar-38M, oaar-640M or null) and architecture keys overriding it
    (d_embed, d_model, n_layers, kernel_size, r, slim, activation); length; sampling_steps
    (default = length: one position revealed per step on average, as EvoDiff samples);
    schedule; relax_temperature; weights (a released .tar); download; trust_checkpoint; lora.
    """

    name = "evodiff"
    defaults = DEFAULTS
    test_options = ({"d_model": 16, "n_layers": 2, "kernel_size": 3, "length": 12, "sampling_steps": 6,
                     "lora": {"rank": 2}},)

    def architecture(self, opts: dict[str, Any]) -> dict[str, Any]:
        """The resolved architecture: the preset's values, overridden by any given key."""
        base = PRESETS.get(opts["preset"], {})
        arch = {k: opts[k] if opts[k] is not None else base.get(k) for k in ARCH_KEYS}
        missing = [k for k, v in arch.items() if v is None]
        if missing:
            raise ValueError(f"evodiff model options {missing} are needed without a preset "
                             f"(presets: {sorted(PRESETS)})")
        return arch

    def check_options(self, opts: dict[str, Any]) -> None:
        if opts["preset"] is not None and opts["preset"] not in PRESETS:
            raise ValueError(f"evodiff preset must be one of {sorted(PRESETS)} or null, got {opts['preset']!r}")
        arch = self.architecture(opts)
        for key in ("d_embed", "d_model", "n_layers", "kernel_size", "r"):
            if int(arch[key]) < 1:
                raise ValueError(f"evodiff option {key} must be >= 1, got {arch[key]}")
        if arch["activation"] not in ("relu", "gelu"):
            raise ValueError(f"evodiff activation must be relu or gelu, got {arch['activation']!r}")
        if int(opts["length"]) < 1:
            raise ValueError(f"evodiff length must be >= 1, got {opts['length']}")
        if opts["weights"] is not None and opts["download"]:
            raise ValueError("give evodiff options.weights (a local file) or options.download, not both")
        if opts["lora"] is not None and not isinstance(opts["lora"], dict):
            raise ValueError(f"evodiff lora must be a mapping of LoRA options or null, got {opts['lora']!r}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        """The model; with `weights` or `download`, carrying EvoDiff's released weights,
        otherwise randomly initialised."""
        opts = self.options(options)
        arch = self.architecture(opts)
        network = build_network(arch)
        if opts["weights"] is not None:
            load_network_weights(network, read_released_weights(opts["weights"], bool(opts["trust_checkpoint"])),
                                 arch, str(opts["weights"]))
        elif opts["download"]:
            load_network_weights(network, download_weights(opts["preset"]), arch, f"EvoDiff's {opts['preset']}")
        lora = dict(opts["lora"]) if opts["lora"] else None
        if lora:
            add_lora(network, lora)
        process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=VOCAB, schedule=opts["schedule"],
                                                        sampling_steps=int(opts["sampling_steps"]),
                                                        relax_temperature=float(opts["relax_temperature"])))
        length = int(opts["length"])

        def layout(n: int, generator: torch.Generator | None) -> Layout:
            return Layout((n, length, VOCAB + 1))

        spec = {"plugin": self.name, "options": {**arch, "lora": lora}}
        return DiffusionModel(OADMDenoiser(network), process, layout, decode_states, spec=spec)

    def load(self, options: dict[str, Any], checkpoint: str | Path | None = None) -> DiffusionModel:
        """checkpoint: None (weights from options.weights / options.download), a released
        EvoDiff `.tar` file, or a vardbio checkpoint of this plugin."""
        options = dict(options)
        if checkpoint is None:
            if options.get("weights") is None and not options.get("download"):
                self.default_checkpoint(options)  # raises, saying where the weights are
            return self.build(options)
        if Path(checkpoint).suffix == ".tar":
            return self.build({**options, "weights": str(checkpoint), "download": False})
        options.pop("weights", None)
        options.pop("download", None)
        saved = read_checkpoint(checkpoint)["spec"]
        if saved.get("plugin") != self.name:
            raise ValueError(f"checkpoint {checkpoint} belongs to model '{saved.get('plugin')}', not '{self.name}'")
        return load_weights(self.build({**saved.get("options", {}), **options}), checkpoint)

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        raise FileNotFoundError(
            "EvoDiff weights are not shipped with vardbio and nothing is downloaded by default: download "
            f"oaar-38M.tar or oaar-640M.tar from {RELEASES} and set campaign.model.options.weights=<path> "
            "(or campaign.model.checkpoint=<path>.tar), or set campaign.model.options.download=true on a "
            "machine with internet to use EvoDiff's own loader")

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        return ValueHead(TokenConvValueNet(VOCAB, **options))

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        raise ValueError("the evodiff model is not pretrained by vardbio: it fine-tunes EvoDiff's released "
                         f"OA-DM weights ({RELEASES}); for a protein model trained here use model=protein_sequence")

    # sequences like the protein_sequence plugin's: FASTA + CSV, the same gallery and summary
    # entries (stability, diversity, naturalness under this model, hmm_family hit fractions)
    write_designs = ProteinSequencePlugin.write_designs
    gallery = ProteinSequencePlugin.gallery
    summarize = ProteinSequencePlugin.summarize


plugin = EvoDiffPlugin()
