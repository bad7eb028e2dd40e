"""Typed campaign configuration, registered with Hydra's ConfigStore; composing it from the
shipped presets plus overrides; and its conversion to plugin config dataclasses at the edge
(with errors that name bad keys).

    cfg = compose_run_config(["campaign=toy_linear", "algorithm=vard", "seed=1"])   # a RunConfig
    summary = Trainer.from_config(cfg).train()

Configs are composed and checked here, at the edge; the Trainer, algorithms and plugins below
it take plain objects (dataclasses, dicts, models, oracles).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from vardbio.reward.compose import RewardTermConfig, RuntimeConfig


@dataclass
class ModelSection:
    """name: a registered model plugin; options: its architecture options; checkpoint: a
    weights file, or null for the plugin's shipped checkpoint; value_head: value-head options."""

    name: str = "toy"
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    value_head: dict[str, Any] = field(default_factory=dict)


@dataclass
class CampaignSection:
    """What is optimised: the model, the reward, and how long.

    reward: the oracle terms (oracle, params, weight, transform, name), combined by
        `aggregation` ('sum' or 'geometric'); a design with a failed term is dropped from
        training and counted (nan_policy 'drop') or given `nan_penalty` ('penalty').
    oracle_runtime: how oracles run (executor, workers, timeout, retries); its cache, when
        null, is `oracle_cache.sqlite` in the run directory, so a resumed run pays nothing
        for designs already scored (set oracle_cache: false to switch caching off).
    iterations: training iterations (algorithms without training ignore it);
    eval_samples: designs sampled and scored before and after (on a separate count of oracle calls);
    oracle_budget: the most real oracle calls the algorithm may spend, or null for no limit.
    task: a name the campaign's files can interpolate into oracle params (e.g. the PMO task
        of molecule_pmo, `${campaign.task}`); null when unused.
    budget_counting: what the budget counts: 'calls' (every real oracle call) or
        'unique_valid' (PMO's rule: each distinct design with a finite reward once; invalid
        designs and repeats are free).
    """

    name: str = "???"
    model: ModelSection = field(default_factory=ModelSection)
    reward: list[RewardTermConfig] = field(default_factory=list)
    aggregation: str = "sum"
    nan_policy: str = "drop"
    nan_penalty: Optional[float] = None
    oracle_runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    oracle_cache: bool = True
    iterations: int = 100
    eval_samples: int = 1024
    oracle_budget: Optional[int] = None
    budget_counting: str = "calls"
    task: Optional[str] = None


MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class AccelerateSection:
    """How the run uses accelerate.

    mixed_precision: 'no', 'bf16' or 'fp16': autocast of the denoiser's forward passes (its
        outputs, and the process math, stay in float32); a GPU is needed for fp16;
    cpu: stay on the CPU even when a GPU is present (otherwise accelerate places the model
        on this process's GPU).
    """

    mixed_precision: str = "no"
    cpu: bool = False

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"accelerate.mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got '{self.mixed_precision}'")


@dataclass
class RunConfig:
    """The root of `vardbio run`. algorithm holds `name` plus that algorithm's settings.

    checkpoint_every: iterations between checkpoints (resume restarts from the last);
    torch_threads: intra-op threads (1 is fastest for small models on 2 cores);
    progress: show a progress bar; report: write report.md with plots at the end;
    tensorboard: also log every metrics row to TensorBoard under out_dir/tensorboard;
    accelerate: devices and mixed precision (see AccelerateSection).
    """

    campaign: CampaignSection = field(default_factory=CampaignSection)
    algorithm: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    out_dir: Optional[str] = None
    checkpoint_every: int = 10
    torch_threads: int = 1
    progress: bool = True
    report: bool = True
    tensorboard: bool = False
    accelerate: AccelerateSection = field(default_factory=AccelerateSection)


CONFIG_MODULE = "vardbio_configs"


def register_configs() -> None:
    """Register the schemas that the YAML presets in vardbio_configs extend."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="campaign", name="campaign_schema", node=CampaignSection)


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose a root config ('config', 'pretrain' or 'sample') from the shipped presets
    (and those of installed plugins) plus command-line style overrides."""
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def compose_run_config(overrides: Sequence[str]) -> RunConfig:
    """The RunConfig of `vardbio run <overrides>`: presets, the campaign/algorithm tuning
    file and the overrides, checked against the schema."""
    return to_run_config(compose_config("config", overrides))


def to_run_config(config: Any) -> RunConfig:
    """A RunConfig from a composed config or a plain mapping (a RunConfig is returned as is)."""
    return to_dataclass(RunConfig, config, "")


def plain(node: Any) -> Any:
    """An OmegaConf node as plain Python containers (other values unchanged)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def to_dataclass(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, recursing into dataclass-typed fields.

    Unknown keys raise a ValueError naming them, `where` they were, and the valid keys; a
    value of the wrong type for an int, float, bool or str field (or an Optional one) raises
    a ValueError naming the key as `where.key` ("" for the root).
    """
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the run config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where or 'the run config'}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints.get(key), value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad settings in {where or 'the run config'}: {err}") from err


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Turn mappings into dataclasses where the field's type asks for one (or a list of them)."""
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return to_dataclass(hint, value, where)
    if typing.get_origin(hint) is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    _check_scalar(hint, value, where)
    return value


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_scalar(hint: Any, value: Any, where: str) -> None:
    """Raise a ValueError naming `where` if `value` does not fit a scalar field type (int,
    float, bool, str, or Optional of one; an int is a valid float); other types pass."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        scalars = [a for a in args if a is not type(None)]
        if len(scalars) != 1:
            return
        hint = scalars[0]
    if hint not in _SCALARS:
        return
    if hint is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:
        fits = isinstance(value, hint)
    if not fits:
        raise ValueError(f"{where} must be {_SCALARS[hint]}, got {value!r}")
