"""Typed campaign configuration, registered with Hydra's ConfigStore; composing it from the
shipped presets plus overrides; and its conversion to plugin config dataclasses at the edge
(with errors that name bad keys).

    cfg = compose_run_config(["campaign=toy_linear", "algorithm=vard", "seed=1"])   # a RunConfig
    summary = Trainer.from_config(cfg).train()

A campaign file may hold settings per algorithm, `algorithms: {vard: {...}, ddpo: {...}}`
(CampaignFile): when that algorithm runs, its block is applied over the algorithm preset and
under the command line's overrides, and the run config records it in `applied_tuning`
(`campaign_file:<campaign>.algorithms.<algorithm>`). A key there that is not a registered
algorithm is an error.

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
    weights file, or null for the plugin's shipped checkpoint; value_head: value-head options;
    frozen_final_steps: the last sampler steps kept as the pretrained model's (not fine-tuned,
    guided or selected), so the path KL of the others bounds the designs' KL
    (DiffusionModel.freeze_final_steps)."""

    name: str = "toy"
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    value_head: dict[str, Any] = field(default_factory=dict)
    frozen_final_steps: int = 0


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


@dataclass
class CampaignFile(CampaignSection):
    """A campaign preset as written in campaign/*.yaml (schema `campaign_schema`): the
    CampaignSection plus `algorithms`, settings per registered algorithm name applied to the
    algorithm section when that algorithm runs (see compose_config). The run config keeps
    what was applied in `applied_tuning`, not the blocks themselves."""

    algorithms: dict[str, Any] = field(default_factory=dict)


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
    accelerate: devices and mixed precision (see AccelerateSection);
    applied_tuning: which campaign-file settings were applied to `algorithm`
        (`campaign_file:<campaign>.algorithms.<algorithm>`), or null; set by compose_config.
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
    applied_tuning: Optional[str] = None


CONFIG_MODULE = "vardbio_configs"


def register_configs() -> None:
    """Register the schemas that the YAML presets in vardbio_configs extend."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="campaign", name="campaign_schema", node=CampaignFile)


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose a root config ('config', 'pretrain' or 'sample') from the shipped presets
    (and those of installed plugins) plus command-line style overrides.

    For 'config', the campaign file's block for the chosen algorithm
    (`campaign.algorithms.<algorithm.name>`) is applied over the algorithm preset and under
    the overrides (it becomes `++algorithm.<key>=<value>` overrides placed before the
    given ones), and `applied_tuning` names it. A campaign whose `algorithms` holds a name
    that is not a registered algorithm is a ValueError.
    """
    register_configs()
    overrides = list(overrides)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
        blocks = _algorithm_blocks(cfg)
        if config_name != "config":
            return cfg
        algorithm = cfg.algorithm.get("name")
        applied = None
        if algorithm in blocks:
            cfg = compose(config_name=config_name,
                          overrides=[*_block_overrides("algorithm", blocks[algorithm]), *overrides])
            applied = f"campaign_file:{cfg.campaign.name}.algorithms.{algorithm}"
        cfg.applied_tuning = applied
        return cfg


def _algorithm_blocks(cfg: DictConfig) -> dict[str, Any]:
    """The campaign's `algorithms` blocks, unresolved ({} without a campaign); a ValueError
    for a key that is not a registered algorithm or a block that is not a mapping."""
    campaign = cfg.get("campaign")
    if not isinstance(campaign, DictConfig) or campaign.get("algorithms") is None:
        return {}
    blocks = OmegaConf.to_container(campaign.algorithms, resolve=False)
    from vardbio import registry

    valid = registry.available("algorithm")
    for name, block in blocks.items():
        where = f"campaign {campaign.get('name')}: algorithms.{name}"
        if name not in valid:
            raise ValueError(f"{where} is not a registered algorithm; registered: {', '.join(valid)}")
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be a mapping of that algorithm's settings, got {block!r}")
    return blocks


def _block_overrides(prefix: str, block: dict[str, Any]) -> list[str]:
    """`++<prefix>.<key>=<value>` overrides that set every leaf of `block` (nested mappings
    merge key by key, as a preset file would; lists and other values replace)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for key, value in block.items():
        path = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            out += _block_overrides(path, value)
            continue
        text = f"++{path}={_override_value(value)}"
        if parser.parse_override(text).value() != value:
            raise ValueError(f"cannot apply the campaign's {path} = {value!r} as an override")
        out.append(text)
    return out


def _override_value(value: Any) -> str:
    """A value in Hydra's override grammar (checked by parsing it back in _block_overrides)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"cannot write {value!r} as an override value")


def compose_run_config(overrides: Sequence[str]) -> RunConfig:
    """The RunConfig of `vardbio run <overrides>`: presets, the campaign file's block for
    the algorithm and the overrides, checked against the schema."""
    return to_run_config(compose_config("config", overrides))


def to_run_config(config: Any) -> RunConfig:
    """A RunConfig from a composed config or a plain mapping (a RunConfig is returned as is).

    The campaign's `algorithms` blocks are left out: compose_config applies the one of the
    chosen algorithm (and records it in `applied_tuning`); a mapping holding a block for its
    algorithm that was not applied (no `applied_tuning`) is a ValueError."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, dict) and isinstance(config.get("campaign"), dict) and "algorithms" in config["campaign"]:
        campaign = dict(config["campaign"])
        blocks = campaign.pop("algorithms") or {}
        algorithm = (config.get("algorithm") or {}).get("name")
        if blocks.get(algorithm) and not config.get("applied_tuning"):
            raise ValueError(f"campaign.algorithms.{algorithm} was not applied to the algorithm section: compose "
                             f"the config with vardbio.campaign.config.compose_config (or merge those settings "
                             f"into `algorithm` and drop campaign.algorithms)")
        config = {**config, "campaign": campaign}
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
