"""One toy_sequence run with the given overrides, printed against its exact optimum: the
check behind BENCHMARKS.md's table of VARD value-data modes (fresh rollouts, replay,
refreshed, importance-weighted).

    python scripts/probe_replay.py algorithm.value_data=replay algorithm.refresh_every=100 seed=1
"""
from __future__ import annotations

import sys
import tempfile

from vardbio.campaign.config import compose_config
from vardbio.campaign.trainer import Trainer


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as out:
        s = Trainer.from_config(compose_config("config", ["campaign=toy_sequence", f"out_dir={out}",
                                                          "progress=false", "report=false", *overrides])).train()
    initial, final = s["reward_initial"]["mean"], s["reward_final"]["mean"]
    optimum, kl_opt = s["analytic"]["reward_optimum"], s["analytic"]["kl_optimum"]
    print(f"{' '.join(overrides) or '(defaults)'}: reward {initial:.3f} -> {final:.3f} (optimum {optimum:.3f}, "
          f"error of the shift {(final - optimum) / (optimum - initial):+.1%}), KL {s['kl_to_reference']:.3f} "
          f"(optimum {kl_opt:.3f}), {s['oracle_calls']} oracle calls, value R² {s['value_r2']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
