"""The `vardbio` command: run, pretrain, sample and bench take Hydra overrides; report
takes a run directory.

    vardbio run campaign=toy_linear algorithm=vard seed=0 out_dir=runs/x
    vardbio run --force campaign=toy_linear out_dir=runs/x    # start runs/x over
    vardbio pretrain model=toy_gaussian8
    vardbio sample model=toy n=16
    vardbio sample checkpoint=runs/x/model_final.pt campaign=toy_linear   # and score them
    vardbio sample model=molecule n=1000 batch_size=250   # + the plugin's sample_metrics.json
    vardbio bench campaign=toy_linear
    vardbio bench suite=pmo_dev algorithms=vard,best_of_n seeds=0,1,2 budget=10000 out=runs/pmo_dev
    vardbio report runs/x
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vardbio.campaign.config import compose_config, to_run_config
from vardbio.extras import MissingExtraError
from vardbio.reward.ledger import OracleBudgetExceeded

__all__ = ["compose_config", "main"]  # compose_config lives in vardbio.campaign.config

COMMANDS = {"run": "config", "bench": None, "pretrain": "pretrain", "sample": "sample",
            "report": None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vardbio", description="Fine-tune diffusion models toward oracle rewards with VARD.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides, e.g. campaign=toy_linear seed=1 (report: the run directory)")
    parser.add_argument("--force", action="store_true",
                        help="run: start out_dir over even when it holds a finished, damaged or different "
                             "run (its oracle cache is kept: designs already scored are not paid again)")
    args = parser.parse_intermixed_args(argv)
    try:
        if args.command == "report":
            return _report(args.overrides)
        if args.command == "bench":
            return _bench(args.overrides)
        if args.force and args.command != "run":
            raise ValueError("--force is an option of `vardbio run` only")
        try:
            cfg = compose_config(COMMANDS[args.command], args.overrides)
        except (HydraException, OmegaConfBaseException):
            raise
        except (AttributeError, KeyError, TypeError) as err:  # OmegaConf's own slips on some overrides
            raise ValueError(f"cannot apply the overrides: {type(err).__name__}: {err}") from err
        return _dispatch(args.command, cfg, args.force)
    except (HydraException, OmegaConfBaseException, ValueError, FileNotFoundError, TypeError,
            OracleBudgetExceeded, MissingExtraError) as err:
        if os.environ.get("VARDBIO_DEBUG"):
            raise
        print(f"vardbio {args.command}: error: {_describe(err)}", file=sys.stderr)
        print("(set VARDBIO_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2


def _report(args: Sequence[str]) -> int:
    if len(args) != 1 or "=" in args[0]:
        raise ValueError("usage: vardbio report <run_dir> (the out_dir of a finished run)")
    from vardbio.campaign.report import write_report
    print(f"wrote {write_report(Path(args[0]))}")
    return 0


def _describe(err: Exception) -> str:
    """The error's own message on one line, with Hydra's hint lines kept and, for a
    Hydra error, the cause's message (which names the key and the problem)."""
    message = " ".join(str(err).split()) or type(err).__name__
    cause = err.__cause__
    if isinstance(err, HydraException) and cause is not None:
        message += ": " + " ".join(str(cause).split())
    return message


SUITE_KEYS = ("suite", "tasks", "algorithms", "seeds", "budget", "out", "campaign", "published")


def _bench(overrides: Sequence[str]) -> int:
    if any(o.startswith(("suite=", "tasks=")) for o in overrides):
        return _bench_suite(overrides)
    from vardbio.campaign.bench import bench_configs, run_bench
    configs, out_dir = bench_configs(overrides)
    result = run_bench(configs, out_dir)
    for algo, s in result["summaries"].items():
        print(f"{algo:>10}: reward {s['reward_initial']['mean']:.3f} -> {s['reward_final']['mean']:.3f} "
              f"with {s['oracle_calls']} oracle calls, KL {s['kl_to_reference']:.3f}")
    print(f"wrote {result['out_dir']}/bench.json and bench.png")
    return 0


def _bench_suite(overrides: Sequence[str]) -> int:
    """`vardbio bench suite=<name>|tasks=a,b [algorithms=..] [seeds=..] [budget=..] [out=..]
    [finished_only=true] [run overrides...]`: every task x algorithm x seed of a PMO suite
    (vardbio.campaign.suite); finished_only tabulates the finished runs and starts none."""
    from vardbio.campaign.suite import main as suite_main

    argv: list[str] = []
    rest: list[str] = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key == "finished_only":
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"finished_only takes true or false, got '{value}'")
            argv += ["--finished-only"] if value.lower() == "true" else []
        elif key in SUITE_KEYS:
            argv += [f"--{key}", value]
        else:
            rest.append(item)
    suite_main(argv + rest)
    return 0


def _dispatch(command: str, cfg: DictConfig, force: bool = False) -> int:
    if command == "run":
        from vardbio.campaign.trainer import Trainer
        trainer = Trainer.from_config(to_run_config(cfg), force=force)
        summary = trainer.train()
        trainer.dist.close()
        if int(os.environ.get("RANK", "0")) == 0:  # once, under `accelerate launch`
            if trainer.finished_before:
                print(f"{trainer.out_dir} holds this finished run: its summary again, without an oracle call "
                      f"(--force runs it again)")
            _print_summary(summary)
    elif command == "pretrain":
        from vardbio.campaign.pretrain import pretrain
        metrics, path = pretrain(cfg)
        print(f"saved {path}")
        print(OmegaConf.to_yaml(OmegaConf.create(metrics)))
    else:
        from vardbio.campaign.sample import sample
        result = sample(cfg)
        if result.rewards is not None:
            from vardbio.algorithms.base import reward_stats
            stats = reward_stats(result.rewards)
            print(f"reward mean {stats['mean']:.4g}, median {stats['median']:.4g}, top10 "
                  f"{stats['top10']:.4g} ({stats['n_nan']} failed) with {result.oracle_calls} oracle calls")
        scalars = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            print(", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
        print("wrote " + ", ".join(str(f) for f in result.files))
    return 0


def _print_summary(s: dict) -> None:
    init, final = s["reward_initial"], s["reward_final"]
    print(f"{s['campaign']} / {s['algorithm']} (seed {s['seed']}): "
          f"reward mean {init['mean']:.4g} -> {final['mean']:.4g}, top10 {init['top10']:.4g} -> {final['top10']:.4g}")
    print(f"oracle calls {s['oracle_calls']}, KL to reference {s['kl_to_reference']:.4g}, "
          f"value R² {s['value_r2']}, {s['wall_seconds']} s")
    if "analytic" in s:
        a = s["analytic"]
        print(f"analytic optimum: reward {a['reward_optimum']:.4g}, KL {a['kl_optimum']:.4g}")


if __name__ == "__main__":
    sys.exit(main())
