"""Sample quality of 3D molecule generation from predicted atoms and bonds: atom and molecule
stability, validity, connected validity, uniqueness, novelty and diversity, plus the
distributions of QED, SA and MMFF strain per heavy atom of the valid designs."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from vardbio.model.diffusion import DiffusionModel
from vardbio.model.evaluation import OracleScores
from vardbio.processes.joint import JointProcess
from vardbio_models.molecule.decoding import canonical, decode_graphs

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)

PROPERTIES = {"qed": ("qed", {}), "sa": ("sa_score", {}), "strain": ("mmff_strain", {})}
"""The property distributions reported for valid designs: name -> (oracle, params)."""


def diversity(mols: Sequence[Chem.Mol]) -> float:
    """Mean pairwise Tanimoto distance of Morgan fingerprints (radius 2, 2048 bits); NaN
    for fewer than two molecules."""
    if len(mols) < 2:
        return float("nan")
    fps = [_MORGAN.GetFingerprint(m) for m in mols]
    total, pairs = 0.0, 0
    for i in range(1, len(fps)):
        sims = DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])
        total += len(sims) - sum(sims)
        pairs += len(sims)
    return total / pairs


def sample_quality(process: JointProcess, states: torch.Tensor, mask: torch.Tensor,
                   training_smiles: set[str] | None = None) -> dict[str, Any]:
    """The standard 3D-generation metrics of final states (B, D) with node masks (B, N).

    atom_stability: fraction of heavy atoms whose bond orders fit their type's valence
        (MAX_VALENCE; hydrogens are implicit and fill the rest);
    molecule_stability: fraction of samples whose every atom is stable and that sanitise;
    validity: fraction that RDKit sanitises (fragments allowed, EDM's definition);
    connected_validity: fraction that sanitise and are one fragment (= valid_fraction, the
        designs oracles can score);
    uniqueness: distinct canonical SMILES among the connected-valid / connected-valid;
    novelty: fraction of those distinct SMILES not in the training set (when given);
    diversity: mean pairwise Tanimoto distance of the connected-valid designs;
    failure_reasons: count of each kind of failure.
    """
    found = decode_graphs(process, states, mask)
    atoms = [s for d in found for s in d.atom_stable]
    valid = [d.mol for d in found if d.reason is None]
    unique = {canonical(m) for m in valid}
    connected = len(valid) / max(len(found), 1)
    out: dict[str, Any] = {
        "samples": len(found),
        "atom_stability": float(np.mean(atoms)) if atoms else float("nan"),
        "molecule_stability": float(np.mean([d.sanitised and all(d.atom_stable) for d in found])),
        "validity": float(np.mean([d.sanitised for d in found])),
        "connected_validity": connected,
        "valid_fraction": connected,
        "uniqueness": len(unique) / len(valid) if valid else float("nan"),
        "diversity": diversity(valid),
    }
    if training_smiles is not None:
        out["novelty"] = len(unique - training_smiles) / len(unique) if unique else float("nan")
    reasons: dict[str, int] = {}
    for d in found:
        if d.reason:
            key = d.reason.split(":")[0] if not d.reason.endswith("fragments") else "fragments"
            reasons[key] = reasons.get(key, 0) + 1
    out["failure_reasons"] = reasons
    return out


def property_figures(designs: Sequence[Any], score: OracleScores) -> dict[str, dict[str, float]]:
    """Mean, median and quartiles of PROPERTIES over the designs an oracle scored (NaN-free):
    {name: {"mean", "median", "q25", "q75", "scored"}}; `score` is the caller's oracle
    runtime (EvaluationOracles.values in a campaign, score_in_process outside one)."""
    out = {}
    for name, (oracle, params) in PROPERTIES.items():
        values = np.asarray(score(oracle, designs, params), dtype=float)
        values = values[np.isfinite(values)]
        out[name] = ({"mean": float(values.mean()), "median": float(np.median(values)),
                      "q25": float(np.quantile(values, 0.25)), "q75": float(np.quantile(values, 0.75)),
                      "scored": int(len(values))} if len(values) else
                     {"mean": float("nan"), "median": float("nan"), "q25": float("nan"), "q75": float("nan"),
                      "scored": 0})
    return out


@torch.no_grad()
def sample_final_states(model: DiffusionModel, n: int, generator: torch.Generator,
                        batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Final states (n, D) and node masks (n, N) of n samples drawn in batches of `batch`."""
    parts = [model.rollout(min(batch, n - start), generator) for start in range(0, n, batch)]
    return torch.cat([p.final for p in parts]), torch.cat([p.mask for p in parts])
