"""Run a shipped campaign from Python, as `vardbio run` does, and read its results.

    python examples/campaign_from_python.py                      # toy_linear, about 20 s
    python examples/campaign_from_python.py campaign.iterations=5 campaign.eval_samples=128

Extra arguments are Hydra overrides, exactly as on the command line.
"""
import json
import sys

import torch

from vardbio.campaign.runner import run_campaign
from vardbio.cli import compose_config


def main(overrides: list[str]) -> None:
    torch.set_num_threads(1)
    cfg = compose_config("config", ["campaign=toy_linear", "algorithm=vard", "progress=false",
                                    "out_dir=runs/example_campaign", *overrides])
    summary = run_campaign(cfg)               # writes summary.json, metrics.csv, report.md, ...
    out = cfg.out_dir
    print(json.dumps({k: summary[k] for k in ("reward_initial", "reward_final", "oracle_calls",
                                              "kl_to_reference")}, indent=1))
    print(f"report: {out}/report.md")


if __name__ == "__main__":
    main(sys.argv[1:])
