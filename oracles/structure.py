"""Protein-structure oracles on backbones.

Design: a backbone array of shape (L, 4, 3), atoms in the order N, CA, C, O, in Å (numpy
or a torch tensor). A backbone with the wrong shape, NaN coordinates (how missing atoms are
written) or no residues gets NaN with the reason. Parse PDB files with `backbone_from_pdb`.

Cost on one core, for L = 100-200: DSSP (pydssp, pure torch) ~3-10 ms; Rg, globularity,
clashes, breaks < 1 ms; TM-score (our own search over superpositions) ~10-50 ms; RMSD < 1 ms;
OpenMM vacuum energy (optional extra) ~0.5 s.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from vardbio.extras import require
from vardbio.reward.oracle import OracleError, PerDesignOracle

BACKBONE_ATOMS = ("N", "CA", "C", "O")


# --------------------------------------------------------------------------- parsing, checks
def backbone_from_pdb(source: str | os.PathLike, chain: str | None = None,
                      model: int = 1) -> np.ndarray:
    """(L, 4, 3) N, CA, C, O coordinates of the protein residues of one chain of a PDB file.

    source: a path (plain or .gz) or PDB text. chain: chain id (default: the first chain).
    Residues are taken in file order; an atom missing from a residue is NaN; for alternate
    locations the first one listed is kept. Raises ValueError if no backbone atom is found.
    """
    text = _read_text(source)
    residues: dict[tuple, dict[str, list[float]]] = {}
    current_model = 1
    for line in text.splitlines():
        if line.startswith("MODEL"):
            current_model = int(line[10:14] or 1)
        if line.startswith("ENDMDL") and current_model == model:
            break
        if current_model != model or not line.startswith(("ATOM", "HETATM")):
            continue
        name = line[12:16].strip()
        if name not in BACKBONE_ATOMS:
            continue
        if chain is None:
            chain = line[21]
        if line[21] != chain:
            continue
        key = (line[21], line[22:27])
        atoms = residues.setdefault(key, {})
        if name not in atoms:  # first altloc wins
            atoms[name] = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
    if not residues:
        raise ValueError(f"no backbone atoms found for chain {chain!r} in {str(source)[:80]!r}")
    out = np.full((len(residues), 4, 3), np.nan)
    for i, atoms in enumerate(residues.values()):
        for j, name in enumerate(BACKBONE_ATOMS):
            if name in atoms:
                out[i, j] = atoms[name]
    return out


def _read_text(source: str | os.PathLike) -> str:
    if isinstance(source, str) and ("\n" in source or source.startswith(("ATOM", "HETATM"))):
        return source
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"PDB file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return fh.read()


def _numpy(design: Any) -> Any:
    import torch

    return design.detach().cpu().numpy() if isinstance(design, torch.Tensor) else design


def to_backbone(design: Any) -> np.ndarray:
    """A float64 (L, 4, 3) copy of a backbone design; OracleError if it is not one."""
    design = _numpy(design)
    if not isinstance(design, np.ndarray):
        raise OracleError(f"expected a (L, 4, 3) backbone array, got {type(design).__name__}")
    x = np.asarray(design, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (4, 3):
        raise OracleError(f"expected a (L, 4, 3) backbone (N, CA, C, O), got shape {x.shape}"
                          + ("; missing backbone atoms?" if x.ndim == 3 and x.shape[1] < 4 else ""))
    if len(x) == 0:
        raise OracleError("empty backbone (0 residues)")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
    if len(bad):
        raise OracleError(f"missing atoms or non-finite coordinates at residues {bad[:10].tolist()}"
                          + (" ..." if len(bad) > 10 else ""))
    return x


def backbone_key(design: Any) -> str:
    """Hash of the coordinates rounded to 0.01 Å."""
    design = _numpy(design)
    x = np.round(np.asarray(design, dtype=np.float64), 2) + 0.0
    return f"bb{x.shape}:" + hashlib.sha1(x.tobytes()).hexdigest()


# --------------------------------------------------------------------------- geometry
def kabsch(mobile: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and translation t (3,) minimising |mobile @ R.T + t - target|.

    mobile, target: (n, 3) with n >= 3 (n = 1 or 2 give a valid but non-unique answer).
    """
    mc, tc = mobile.mean(0), target.mean(0)
    h = (mobile - mc).T @ (target - tc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, tc - mc @ r.T


def superposed_rmsd(mobile: np.ndarray, target: np.ndarray) -> float:
    """RMSD (Å) between (n, 3) point sets after optimal superposition."""
    r, t = kabsch(mobile, target)
    return float(np.sqrt(((mobile @ r.T + t - target) ** 2).sum(1).mean()))


def tm_d0(length: int) -> float:
    """TM-score distance scale d0(L) = 1.24 (L - 15)^(1/3) - 1.8 Å, at least 0.5."""
    if length <= 21:
        return 0.5
    return max(1.24 * (length - 15) ** (1.0 / 3.0) - 1.8, 0.5)


def tm_score(mobile: np.ndarray, target: np.ndarray, max_iter: int = 20) -> float:
    """TM-score (Zhang & Skolnick 2004) of (L, 3) CA coordinates with residue i <-> i.

    Normalised by the target length. The superposition maximising the score is searched as
    in the TM-score program: seed superpositions on fragments of length L, L/2, L/4, ... 4,
    each refined by re-fitting on the residues closer than d_search, keeping the best score.
    """
    n = len(target)
    if n != len(mobile):
        raise ValueError(f"tm_score needs equal lengths, got {len(mobile)} and {n}")
    if n < 3:
        raise ValueError("tm_score needs at least 3 residues")
    d0 = tm_d0(n)
    d0_search = float(np.clip(d0, 4.5, 8.0))
    best = 0.0
    frag_lengths = sorted({max(n >> k, 4) for k in range(0, 32) if (n >> k) >= 4} | {min(n, 4)},
                          reverse=True)
    seen: set[bytes] = set()
    for lf in frag_lengths:
        step = max(1, lf // 2)
        for start in range(0, n - lf + 1, step):
            idx = np.arange(start, start + lf)
            for _ in range(max_iter):
                sig = idx.tobytes()
                if sig in seen:
                    break
                seen.add(sig)
                r, t = kabsch(mobile[idx], target[idx])
                d = np.linalg.norm(mobile @ r.T + t - target, axis=1)
                best = max(best, float((1.0 / (1.0 + (d / d0) ** 2)).sum() / n))
                cut = d0_search
                new = np.flatnonzero(d < cut)
                while len(new) < 3:
                    cut += 0.5
                    new = np.flatnonzero(d < cut)
                if np.array_equal(new, idx):
                    break
                idx = new
    return best


def _load_target(target: Any, chain: str | None) -> np.ndarray:
    if isinstance(target, (str, os.PathLike)):
        x = backbone_from_pdb(target, chain)
    else:
        x = np.asarray(target, dtype=np.float64)
    if x.ndim == 3 and x.shape[1:] == (4, 3):
        x = x[:, 1]
    if x.ndim != 2 or x.shape[1] != 3 or len(x) < 3:
        raise ValueError(f"target must be a PDB file, a (L, 4, 3) backbone or (L, 3) CA "
                         f"coordinates with L >= 3, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("target has missing CA atoms or non-finite coordinates")
    return x


# --------------------------------------------------------------------------- oracles
class BackboneOracle(PerDesignOracle):
    """Base: rounded-coordinate hash as the cache key."""

    def design_key(self, design: Any) -> str:
        return backbone_key(design)


class SecondaryStructure(BackboneOracle):
    """Fraction of residues in a DSSP class (pydssp's 3-state assignment: helix H, strand E,
    loop -). kind: "helix", "strand" or "loop". Fraction in [0, 1]; higher is better (for
    the chosen class). ~5 ms."""

    name = "ss_fraction"
    units = "fraction of residues"
    _CODES = {"helix": "H", "strand": "E", "loop": "-"}

    def __init__(self, kind: str = "helix"):
        if kind not in self._CODES:
            raise ValueError(f"ss_fraction kind must be one of {sorted(self._CODES)}, got {kind!r}")
        self.kind = kind

    def params(self):
        return {"kind": self.kind}

    def score_one(self, design):
        ss = dssp(to_backbone(design))
        return sum(c == self._CODES[self.kind] for c in ss) / len(ss)


def dssp(backbone: np.ndarray) -> str:
    """3-state DSSP string (H, E, -) of a (L, 4, 3) backbone, from pydssp."""
    import torch

    pydssp = require("pydssp", extra="protein", what="DSSP (secondary structure)")

    if len(backbone) < 3:
        raise OracleError("DSSP needs at least 3 residues")
    with torch.no_grad():
        out = pydssp.assign(torch.as_tensor(backbone, dtype=torch.float32), out_type="c3")
    return "".join(out)


class SoftStrand(BackboneOracle):
    """A graded strand fraction: DSSP's bridge rules (the ones behind `ss_fraction` strand)
    evaluated on pydssp's smooth H-bond map, with products for "and", sums capped at 1 for
    "or", and the H-bond energy cutoff relaxed from DSSP's -0.5 to `cutoff` kcal/mol (an
    H-bond counts fully below cutoff - 2 * margin, partly up to cutoff). Near-bridges that
    DSSP does not yet call a strand score above 0, so it carries signal where the strict
    fraction is still 0; on real 32-residue fragments it correlates 0.96 with it. Mean over
    residues, in [0, 1]; higher is better. ~2 ms for 32 residues."""

    name = "soft_strand"
    units = "graded fraction of residues"

    def __init__(self, cutoff: float = 0.0, margin: float = 0.75):
        if margin <= 0:
            raise ValueError(f"soft_strand needs margin > 0, got {margin}")
        self.cutoff, self.margin = float(cutoff), float(margin)

    def params(self):
        return {"cutoff": self.cutoff, "margin": self.margin}

    def score_one(self, design):
        from pydssp.pydssp_numpy import get_hbond_map

        bb = to_backbone(design)
        if len(bb) < 5:
            raise OracleError("soft_strand needs at least 5 residues")
        # hb[i, j]: H-bond from the C=O of residue i to the N-H of residue j, in [0, 1]
        hb = get_hbond_map(bb.astype(np.float64), cutoff=self.cutoff, margin=self.margin).T
        n = len(bb) - 2
        # win[i, j, a, b] = hb[i + a, j + b]: the 3 x 3 neighbourhoods of residue pairs
        win = np.stack([np.stack([hb[a:a + n, b:b + n] for b in range(3)], -1) for a in range(3)], -2)
        rev = win.transpose(1, 0, 2, 3)
        parallel = win[..., 0, 1] * rev[..., 1, 2] + rev[..., 0, 1] * win[..., 1, 2]
        antiparallel = win[..., 1, 1] * rev[..., 1, 1] + win[..., 0, 2] * rev[..., 0, 2]
        bridges = np.pad(parallel + antiparallel, 1)
        return float(np.minimum(1.0, bridges.sum(-1)).mean())


class RadiusOfGyration(BackboneOracle):
    """Radius of gyration of the CA atoms, Å. Lower is more compact (higher_is_better=False);
    compare lengths with `globularity`. < 1 ms."""

    name = "radius_of_gyration"
    units = "Å"
    higher_is_better = False

    def score_one(self, design):
        ca = to_backbone(design)[:, 1]
        return float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()))


class Globularity(BackboneOracle):
    """Compactness relative to length: 2.2 L^0.38 / Rg(CA), where 2.2 L^0.38 Å is the radius
    of gyration of a typical folded globular protein of L residues (Skolnick et al. 1997).
    About 1 for a globular fold, well below 1 for extended chains. Higher is better."""

    name = "globularity"
    units = "ratio (expected Rg / observed Rg)"

    def score_one(self, design):
        ca = to_backbone(design)[:, 1]
        if len(ca) < 2:
            raise OracleError("globularity needs at least 2 residues")
        rg = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()))
        if rg == 0:
            raise OracleError("all CA atoms coincide")
        return 2.2 * len(ca) ** 0.38 / rg


class CAClashes(BackboneOracle):
    """Number of CA pairs at least `min_separation` apart in sequence and closer than
    `threshold` Å (3.0 by default; real structures have none). Lower is better."""

    name = "ca_clashes"
    units = "count of CA pairs"
    higher_is_better = False

    def __init__(self, threshold: float = 3.0, min_separation: int = 2):
        if threshold <= 0 or min_separation < 1:
            raise ValueError("ca_clashes needs threshold > 0 and min_separation >= 1")
        self.threshold, self.min_separation = float(threshold), int(min_separation)

    def params(self):
        return {"threshold": self.threshold, "min_separation": self.min_separation}

    def score_one(self, design):
        ca = to_backbone(design)[:, 1]
        d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
        i, j = np.triu_indices(len(ca), k=self.min_separation)
        return float((d[i, j] < self.threshold).sum())


class ChainBreaks(BackboneOracle):
    """Number of consecutive CA-CA distances above `max_distance` Å (4.2 by default; a
    trans peptide bond gives 3.8). Lower is better."""

    name = "chain_breaks"
    units = "count"
    higher_is_better = False

    def __init__(self, max_distance: float = 4.2):
        if max_distance <= 0:
            raise ValueError("chain_breaks needs max_distance > 0")
        self.max_distance = float(max_distance)

    def params(self):
        return {"max_distance": self.max_distance}

    def score_one(self, design):
        ca = to_backbone(design)[:, 1]
        return float((np.linalg.norm(np.diff(ca, axis=0), axis=1) > self.max_distance).sum())


class _TargetOracle(BackboneOracle):
    def __init__(self, target: Any, chain: str | None = None):
        self.target_ca = _load_target(target, chain)
        self.target_desc = str(target) if isinstance(target, (str, os.PathLike)) else "array"
        self.target_hash = hashlib.sha1(np.round(self.target_ca, 3).tobytes()).hexdigest()

    def params(self):
        return {"target": self.target_desc, "target_sha1": self.target_hash}

    def _ca(self, design) -> np.ndarray:
        ca = to_backbone(design)[:, 1]
        if len(ca) != len(self.target_ca):
            raise OracleError(f"backbone has {len(ca)} residues, the target {len(self.target_ca)}")
        return ca


class TMScore(_TargetOracle):
    """TM-score to a target backbone of the same length (residue i <-> i), in (0, 1],
    higher is better (> 0.5: same fold). target: PDB path, (L, 4, 3) or (L, 3) CA array.
    backend: "native" (our implementation) or "tmtools" (the optional GPL extra, TM-align
    with its own sequence-independent alignment). ~10-50 ms."""

    name = "tm_score"
    units = "TM-score (0-1)"

    def __init__(self, target: Any, chain: str | None = None, backend: str = "native"):
        super().__init__(target, chain)
        if backend not in ("native", "tmtools"):
            raise ValueError(f"tm_score backend must be 'native' or 'tmtools', got {backend!r}")
        if backend == "tmtools":
            try:
                import tmtools  # noqa: F401
            except ImportError as err:
                raise ImportError("tm_score backend 'tmtools' needs the optional extra: "
                                  "pip install 'vardbio[tmtools]'") from err
        self.backend = backend

    def params(self):
        return {**super().params(), "backend": self.backend}

    def score_one(self, design):
        ca = self._ca(design)
        if self.backend == "tmtools":
            import tmtools
            seq = "A" * len(ca)
            return float(tmtools.tm_align(ca, self.target_ca, seq, seq).tm_norm_chain2)
        return tm_score(ca, self.target_ca)


class BackboneRMSD(_TargetOracle):
    """CA RMSD (Å) to a target backbone of the same length after optimal superposition.
    Lower is better. < 1 ms."""

    name = "backbone_rmsd"
    units = "Å"
    higher_is_better = False

    def score_one(self, design):
        return superposed_rmsd(self._ca(design), self.target_ca)


class OpenMMEnergy(BackboneOracle):
    """AMBER14 potential energy in vacuum of the backbone built as poly-glycine, kJ/mol per
    residue, lower is better. Optional extra: pip install 'vardbio[openmm]'.

    Hydrogens (and the C-terminal OXT) are added to the given N, CA, C, O atoms; with
    `relax_hydrogens` they are minimised with the heavy atoms held fixed, so the energy is
    that of the given backbone geometry. No cutoff, no solvent. ~0.1-0.5 s for 100 residues.
    """

    name = "openmm_energy"
    units = "kJ/mol per residue"
    higher_is_better = False

    def __init__(self, relax_hydrogens: bool = True, max_iterations: int = 500):
        try:
            import openmm  # noqa: F401
        except ImportError as err:
            raise ImportError("openmm_energy needs the optional extra: "
                              "pip install 'vardbio[openmm]'") from err
        if max_iterations < 1:
            raise ValueError("openmm_energy needs max_iterations >= 1")
        self.relax_hydrogens, self.max_iterations = bool(relax_hydrogens), int(max_iterations)
        self._ff = None

    def __getstate__(self):
        return {**self.__dict__, "_ff": None}

    def params(self):
        return {"relax_hydrogens": self.relax_hydrogens, "max_iterations": self.max_iterations,
                "forcefield": "amber14-all"}

    def score_one(self, design):
        return self.energy(design)[0]

    def energy(self, design) -> tuple[float, np.ndarray, list[str]]:
        """(kJ/mol per residue, (n, 3) final positions in Å, element symbols) of a backbone."""
        import openmm
        from openmm import app, unit

        x = to_backbone(design)
        if len(x) < 2:
            raise OracleError("openmm_energy needs at least 2 residues")
        top = app.Topology()
        chain = top.addChain()
        positions, previous_c = [], None
        elements = [app.element.nitrogen, app.element.carbon, app.element.carbon,
                    app.element.oxygen]
        for i, res_xyz in enumerate(x):
            res = top.addResidue("GLY", chain)
            atoms = [top.addAtom(n, e, res) for n, e in zip(BACKBONE_ATOMS, elements)]
            positions.extend(res_xyz)
            top.addBond(atoms[0], atoms[1])
            top.addBond(atoms[1], atoms[2])
            top.addBond(atoms[2], atoms[3])
            if previous_c is not None:
                top.addBond(previous_c, atoms[0])
            previous_c = atoms[2]
            if i == len(x) - 1:  # C-terminal carboxylate oxygen, opposite CA and O
                ca, c, o = res_xyz[1], res_xyz[2], res_xyz[3]
                d = -((ca - c) / np.linalg.norm(ca - c) + (o - c) / np.linalg.norm(o - c))
                oxt = top.addAtom("OXT", app.element.oxygen, res)
                top.addBond(atoms[2], oxt)
                positions.append(c + 1.25 * d / np.linalg.norm(d))
        if self._ff is None:
            self._ff = app.ForceField("amber14-all.xml")
        ff = self._ff
        modeller = app.Modeller(top, [openmm.Vec3(*p) for p in positions] * unit.angstrom)
        import random
        saved = random.getstate()  # addHydrogens starts hydrogens at random positions
        random.seed(0)
        try:
            modeller.addHydrogens(ff)
        finally:
            random.setstate(saved)
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff,
                                 constraints=None)
        if self.relax_hydrogens:
            for atom in modeller.topology.atoms():
                if atom.element != app.element.hydrogen:
                    system.setParticleMass(atom.index, 0.0)  # held fixed by the minimiser
        context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(modeller.positions)
        if self.relax_hydrogens:
            openmm.LocalEnergyMinimizer.minimize(context, 1.0, self.max_iterations)
        state = context.getState(getEnergy=True, getPositions=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / len(x)
        return (energy, np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)),
                [a.element.symbol for a in modeller.topology.atoms()])
