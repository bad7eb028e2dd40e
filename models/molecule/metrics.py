"""Sample quality of 3D molecule generation: atom and molecule stability, validity,
uniqueness, novelty and diversity, under the decoder's connectivity or stricter covalent
radii, with or without hydrogen repair."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from vardbio.geometry import cat_padded
from vardbio.model.diffusion import DiffusionModel
from vardbio_models.molecule.decoding import canonical, perceive_state
from vardbio_models.molecule.state import state_parts

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


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


def sample_quality(states: torch.Tensor, mask: torch.Tensor | None,
                   training_smiles: set[str] | None = None, connectivity: str = "capped",
                   repair: bool = False) -> dict[str, Any]:
    """The standard 3D-generation metrics on decoded samples.

    atom_stability: fraction of heavy atoms that are stable (see `perceive`: neutral and
        closed-shell after bond perception with their predicted hydrogens; hydrogens are
        implicit in the state, so this counts heavy atoms only);
    molecule_stability: fraction of samples whose every atom is stable;
    validity: fraction that RDKit sanitises (EDM's definition, fragments allowed);
    valid_fraction: fraction that are usable designs (sanitised, one fragment, stable);
    uniqueness: distinct canonical SMILES among the valid designs / valid designs;
    novelty: fraction of the distinct valid SMILES not in the training set.
    connectivity: 'capped' (what the decoder does) or 'radii' (stricter: see `perceive`);
    repair: decode as a model with repair_hydrogens does (validity, valid_fraction,
        uniqueness, novelty and diversity then count repaired molecules; `repaired` is
        their fraction of all samples). Atom and molecule stability always use the
        predicted hydrogens.
    """
    found = [perceive_state(*parts, connectivity=connectivity, repair=repair)
             for parts in state_parts(states, mask)]
    atoms = [s for p in found for s in p.atom_stable]
    valid = [p.mol for p in found if p.reason is None]
    smiles = [canonical(m) for m in valid]
    unique = set(smiles)
    out: dict[str, Any] = {
        "samples": len(found),
        "atom_stability": float(np.mean(atoms)) if atoms else float("nan"),
        "molecule_stability": float(np.mean([bool(p.atom_stable) and all(p.atom_stable) and p.mol is not None
                                             and not p.repaired for p in found])),
        "validity": float(np.mean([p.sanitised for p in found])),
        "valid_fraction": len(valid) / max(len(found), 1),
        "uniqueness": len(unique) / len(valid) if valid else float("nan"),
        "diversity": diversity(valid),
        "repaired": float(np.mean([p.repaired for p in found])) if found else float("nan"),
    }
    if training_smiles is not None:
        out["novelty"] = len(unique - training_smiles) / len(unique) if unique else float("nan")
    reasons: dict[str, int] = {}
    for p in found:
        if p.reason:
            key = p.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    out["failure_reasons"] = reasons
    return out


def quality_report(states: torch.Tensor, masks: torch.Tensor | None,
                   training: set[str] | None = None) -> dict[str, Any]:
    """sample_quality of final states (n, N, F) with masks (n, N), novelty against
    `training` SMILES when given, plus the same figures with covalent-radii connectivity
    (`radii_connectivity`) and with hydrogen repair (`with_hydrogen_repair`)."""
    metrics = sample_quality(states, masks, training)
    strict = sample_quality(states, masks, training, connectivity="radii")
    metrics["radii_connectivity"] = {k: v for k, v in strict.items() if k != "failure_reasons"}
    repaired = sample_quality(states, masks, training, repair=True)
    metrics["with_hydrogen_repair"] = {k: v for k, v in repaired.items() if k != "failure_reasons"}
    return metrics


@torch.no_grad()
def sample_final_states(model: DiffusionModel, n: int, generator: torch.Generator,
                        batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Final states (n, N, F) and masks (n, N) of n samples drawn in batches of `batch`."""
    parts = [model.rollout(min(batch, n - start), generator) for start in range(0, n, batch)]
    return cat_padded([p.final for p in parts]), cat_padded([p.mask for p in parts])
