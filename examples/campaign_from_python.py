"""Run a shipped campaign from Python, as `vardbio run` does, and read its results.

    python examples/campaign_from_python.py                      # toy_linear, about 20 s
    python examples/campaign_from_python.py campaign.iterations=5 campaign.eval_samples=128

Extra arguments are Hydra overrides, exactly as on the command line. The composed config is
a typed RunConfig; `vardbio run` is `Trainer.from_config(config).train()`.
"""
import json
import sys

import vardbio
from vardbio.campaign.config import compose_run_config


def main(overrides: list[str]) -> None:
    config = compose_run_config(["campaign=toy_linear", "algorithm=vard", "progress=false",
                                 "out_dir=runs/example_campaign", *overrides])
    trainer = vardbio.Trainer.from_config(config)
    summary = trainer.train()       # writes summary.json, metrics.csv, report.md, ... into out_dir
    print(json.dumps({k: summary[k] for k in ("reward_initial", "reward_final", "oracle_calls",
                                              "kl_to_reference", "analytic")}, indent=1))
    print(f"report: {trainer.out_dir}/report.md")


if __name__ == "__main__":
    main(sys.argv[1:])
