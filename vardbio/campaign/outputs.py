"""Files a campaign writes: metrics.csv, call_history.csv, summary.json, TensorBoard events."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from vardbio.metrics import top_k_auc, top_k_curve
from vardbio.reward.ledger import OracleLedger


def write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per iteration; columns are the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def write_reward_terms_csv(components: dict[str, Any], rewards: Any, reasons: list[str | None],
                           path: Path) -> None:
    """One row per design: its index, each reward term's raw oracle score (empty where the
    oracle failed), the total reward and the failure reason (empty when there is none)."""
    names = list(components)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["design", *names, "reward", "failure"])
        for i, reward in enumerate(rewards):
            scores = [_cell(components[name][i]) for name in names]
            writer.writerow([i, *scores, _cell(reward), reasons[i] or ""])


def write_call_history(ledger: OracleLedger, path: Path) -> None:
    """One row per distinct design the algorithm had scored, in order: its position, the
    running count of unique valid designs (PMO's calls), the design's key and its reward
    (empty where it failed)."""
    valid = 0
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "unique_valid_calls", "design_key", "reward"])
        for i, (key, reward) in enumerate(ledger.history):
            valid += math.isfinite(reward)
            writer.writerow([i, valid, key, _cell(reward)])


def call_history_auc(ledger: OracleLedger) -> dict[str, Any]:
    """PMO's auc_top1, auc_top10 and auc_top100 of the ledger's unique valid designs (every
    100 calls, divided by the budget, or by the calls made when there is no budget; None
    when there are none) and the top-10 curve [[calls, mean of the top 10 so far], ...]."""
    rewards = ledger.valid_history_rewards()
    if not rewards:
        return {"auc_top1": None, "auc_top10": None, "auc_top100": None, "top10_curve": []}
    budget = ledger.budget if ledger.budget else len(rewards)
    calls, means = top_k_curve(rewards, 10)
    return {**{f"auc_top{k}": top_k_auc(rewards, k, budget) for k in (1, 10, 100)},
            "top10_curve": [[int(c), float(m)] for c, m in zip(calls, means)]}


def _cell(value: Any) -> str:
    value = float(value)
    return "" if not math.isfinite(value) else f"{value:.6g}"


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """metrics.csv back as dicts of floats (empty cells become NaN)."""
    with Path(path).open() as fh:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(fh)]


def write_json(data: dict[str, Any], path: Path) -> None:
    """JSON with NaN written as null (valid JSON for every reader)."""
    path.write_text(json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


class TensorBoardLog:
    """Metrics rows as TensorBoard scalars (beside metrics.csv), one step per iteration.

    Events at steps >= first_step from an earlier, interrupted run in the same directory are
    purged, so a resumed run does not log an iteration twice.
    """

    def __init__(self, log_dir: Path, first_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError("tensorboard=true needs the tensorboard package: "
                             "pip install 'vardbio[tensorboard]'") from err
        self.writer = SummaryWriter(str(log_dir), purge_step=first_step or None)

    def log_row(self, row: dict[str, Any]) -> None:
        """Every numeric entry of a metrics row except the iteration (the step)."""
        step = int(row["iteration"])
        for key, value in row.items():
            if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", value, step)

    def log_summary(self, summary: dict[str, Any], step: int) -> None:
        """The evaluation rewards and KL of the finished run, at the last step."""
        for when in ("initial", "final"):
            for stat in ("mean", "top10"):
                value = summary[f"reward_{when}"][stat]
                if isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(f"eval/reward_{when}_{stat}", value, step)
        self.writer.add_scalar("eval/kl_to_reference", summary["kl_to_reference"], step)
        self.writer.add_scalar("eval/oracle_calls", summary["oracle_calls"], step)

    def close(self) -> None:
        self.writer.close()
