"""Sample quality of 3D molecule generation from predicted atoms and bonds: atom and molecule
stability, validity, connected validity, uniqueness, novelty and diversity, the
distributions of QED, SA and MMFF strain per heavy atom of the valid designs, and the
PoseBusters intramolecular checks of their conformers."""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator

from vardbio.extras import require
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


def property_figures(designs: Sequence[Any], score: OracleScores,
                     names: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean, median and quartiles of PROPERTIES (or those `names` of them) over the designs
    an oracle scored (NaN-free): {name: {"mean", "median", "q25", "q75", "scored"}}; `score`
    is the caller's oracle runtime (EvaluationOracles.values in a campaign,
    score_in_process outside one)."""
    out = {}
    for name in PROPERTIES if names is None else names:
        oracle, params = PROPERTIES[name]
        values = np.asarray(score(oracle, designs, params), dtype=float)
        values = values[np.isfinite(values)]
        out[name] = ({"mean": float(values.mean()), "median": float(np.median(values)),
                      "q25": float(np.quantile(values, 0.25)), "q75": float(np.quantile(values, 0.75)),
                      "scored": int(len(values))} if len(values) else
                     {"mean": float("nan"), "median": float("nan"), "q25": float("nan"), "q75": float("nan"),
                      "scored": 0})
    return out


ENERGY_CHECK = "internal_energy"
"""The column PoseBusters names its energy-ratio check ("Internal energy", lower-cased)."""


@lru_cache(maxsize=4)
def _posebusters_config(energy: bool, threads: int) -> dict[str, Any]:
    """PoseBusters' own "mol" configuration (the intramolecular checks) with only the modules
    whose outcome it reports (its file lists the energy-ratio module twice, once unreported):
    every check but the energy ratio (energy False), or the energy ratio alone (energy True)
    with its conformer ensemble on `threads` threads (its default, 0, takes every core)."""
    busters = require("posebusters", extra="chem", what="the PoseBusters checks of 3D molecules")
    config = copy.deepcopy(busters.PoseBusters("mol").config)
    modules = []
    for module in config["modules"]:
        if not module.get("chosen_binary_test_output") or (module["function"] == "energy_ratio") != energy:
            continue
        if energy:
            module["parameters"] = {**module.get("parameters", {}), "num_threads": threads}
        modules.append(module)
    config["modules"] = modules
    return config


def _bust(config: dict[str, Any], mols: list[Chem.Mol]) -> Any:
    """PoseBusters' table of the molecules under `config` (also run in the energy worker)."""
    from posebusters import PoseBusters

    table = PoseBusters(config).bust(mols)
    RDLogger.DisableLog("rdApp.*")  # its sanity checks enable RDKit's log, which the package disables
    return table


def _energy_passes(mols: list[Chem.Mol], threads: int, seconds: float, progress: bool) -> tuple[list[Any], int]:
    """(PoseBusters' energy-ratio outcome of each molecule: True, False or NaN, the number cut
    off). The check embeds 50 ETKDG conformers, which on a strained design (bridged small
    rings) can run for minutes, so each molecule runs in a worker process stopped after
    `seconds` (outcome NaN) and replaced."""
    import multiprocessing

    from tqdm import tqdm

    config = _posebusters_config(True, threads)
    # fork: a spawned worker would re-run the caller's __main__ (a script without a main
    # guard would recurse); the worker runs RDKit only, never torch's thread pool
    context = multiprocessing.get_context("fork")
    outcomes: list[Any] = []
    timeouts, pool = 0, None
    try:
        for mol in tqdm(mols, desc="posebusters energy", unit="mol", disable=not progress):
            if pool is None:
                pool = context.Pool(1)
            job = pool.apply_async(_bust, (config, [mol]))
            try:
                outcomes.append(job.get(seconds).iloc[0, 0])
            except multiprocessing.TimeoutError:
                pool.terminate()
                pool, timeouts = None, timeouts + 1
                outcomes.append(float("nan"))
    finally:
        if pool is not None:
            pool.terminate()
    return outcomes, timeouts


def posebusters_figures(designs: Sequence[Any], energy: bool = True, threads: int = 1, progress: bool = False,
                        energy_seconds: float = 10.0) -> dict[str, Any]:
    """PoseBusters' intramolecular checks ("mol" configuration: sanitisation, InChI, one
    fragment, no radicals, bond lengths, bond angles, internal clashes, aromatic ring and
    double bond flatness, non-aromatic ring non-flatness, internal energy) of the designs
    that are RDKit molecules with a 3D conformer; anything else (a DecodeFailure) fails every
    check. Each molecule is checked as heavy atoms with implicit hydrogens (Chem.RemoveHs):
    the distance-geometry checks ignore hydrogens, and the energy check adds the hydrogens
    itself and relaxes them with UFF before comparing the conformer's UFF energy with the
    mean of 50 relaxed ETKDG conformers (ratio ≤ 100 passes); explicit hydrogens placed by
    decoding would be scored where they were put. A check PoseBusters cannot decide (NaN:
    the energy when UFF lacks parameters or the check ran past `energy_seconds`) counts as
    failed and is counted in `undecided` (`energy_timeouts` of them cut off). energy=False
    skips the energy check (the slowest, ~0.1-1 s a molecule, run in a worker process);
    progress shows bars.

    Returns {"samples": all designs, "checked": the molecules checked,
    "pass_rate": fraction of the checked molecules passing every check,
    "pass_rate_all_samples": molecules passing every check / all designs,
    "checks": {check: pass rate over the checked molecules},
    "undecided": {check: molecules it could not decide}, "energy_check", "energy_timeouts"}
    (rates NaN with nothing checked)."""
    mols = [Chem.RemoveHs(d) for d in designs if isinstance(d, Chem.Mol) and d.GetNumConformers()]
    out: dict[str, Any] = {"samples": len(designs), "checked": len(mols), "pass_rate": float("nan"),
                           "pass_rate_all_samples": 0.0 if designs else float("nan"), "checks": {},
                           "undecided": {}, "energy_check": energy, "energy_timeouts": 0}
    if not mols:
        return out
    import pandas as pd
    from tqdm import tqdm

    config = _posebusters_config(False, threads)
    chunks = range(0, len(mols), 20)
    table = pd.concat([_bust(config, mols[i:i + 20]) for i in tqdm(chunks, desc="posebusters", unit="x20",
                                                                    disable=not progress)])
    if energy:
        table[ENERGY_CHECK], out["energy_timeouts"] = _energy_passes(mols, threads, energy_seconds, progress)
    passed = table.astype(object).where(table.notna(), False).astype(bool)  # undecided counts as failed
    every = passed.all(axis=1)
    out.update(pass_rate=float(every.mean()), pass_rate_all_samples=float(every.sum()) / len(designs),
               checks={c: float(passed[c].mean()) for c in table.columns},
               undecided={c: int(table[c].isna().sum()) for c in table.columns})
    return out


@torch.no_grad()
def sample_final_states(model: DiffusionModel, n: int, generator: torch.Generator,
                        batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Final states (n, D) and node masks (n, N) of n samples drawn in batches of `batch`."""
    parts = [model.rollout(min(batch, n - start), generator) for start in range(0, n, batch)]
    return torch.cat([p.final for p in parts]), torch.cat([p.mask for p in parts])
