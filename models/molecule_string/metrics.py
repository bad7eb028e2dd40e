"""Quick sample-quality figures of the string model (the full MOSES metrics, FCD included,
are computed by scripts/eval_molecule_string.py)."""
from __future__ import annotations

from typing import Collection, Sequence

import numpy as np
from rdkit import Chem

from vardbio.model.evaluation import OracleScores


def quick_statistics(mols: Sequence[Chem.Mol | None], score: OracleScores, training: Collection[str] | None = None,
                     pad_inside: float | None = None) -> dict[str, float]:
    """validity (fraction decoded to a non-empty molecule), uniqueness (distinct canonical
    SMILES among the valid), novelty (valid unique ones not in `training`, if given), mean
    QED, mean SA score (the qed and sa_score oracles, from `score`:
    vardbio.model.evaluation.OracleScores) and mean heavy-atom count of the valid molecules,
    and pad_inside_fraction (samples with a PAD token before a real one) when given."""
    valid = [m for m in mols if m is not None]
    smiles = {Chem.MolToSmiles(m) for m in valid}
    stats = {"n": len(mols), "validity": len(valid) / max(len(mols), 1),
             "uniqueness": len(smiles) / max(len(valid), 1)}
    if training is not None:
        stats["novelty"] = len([s for s in smiles if s not in training]) / max(len(smiles), 1)
    stats["qed_mean"] = float(np.nanmean(score("qed", valid, None))) if valid else float("nan")
    stats["sa_mean"] = float(np.nanmean(score("sa_score", valid, None))) if valid else float("nan")
    stats["heavy_atoms_mean"] = float(np.mean([m.GetNumAtoms() for m in valid])) if valid else float("nan")
    if pad_inside is not None:
        stats["pad_inside_fraction"] = pad_inside
    return stats
