"""Docking oracle: AutoDock Vina (the `vina` wheel) with ligand preparation by meeko.

Design: an RDKit `Mol` with a 3D conformer (hydrogens optional: they are added with
coordinates). With `embed=True` the input conformer is ignored and a seeded ETKDG conformer
is made from the molecule (SMILES strings are then accepted too), so the score depends on the
molecule only. Score: the Vina energy of the best pose, kcal/mol, **lower is better**
(higher_is_better=False): give the term a negative weight or a transform such as
{"type": "linear", "low": -4, "high": -12} to turn it into a reward.

Receptor: by default HIV-1 protease (PDB 1HVR) prepared by scripts/prepare_receptor.py and
shipped in data/receptors/ with its box. Your own receptor: a .pdbqt, or a .pdb (prepared here
with meeko's polymer templates; needs hydrogens or standard residues), plus a box given as
center/size (Å) or a JSON file {"center": [x, y, z], "size": [x, y, z]}.

Cost: ~1-5 s per small ligand at exhaustiveness 1 on one core; roughly linear in
exhaustiveness and in ligand flexibility (a 10-torsion ligand takes ~5 min at exhaustiveness
8). A worker computes the receptor grid maps once (~1 s) and reuses them.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from vardbio.data import data_dir
from vardbio.extras import check, require

require("rdkit", extra="chem", what="the docking oracle")
check("vina", "meeko", "gemmi", extra="docking", what="the docking oracle")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from vardbio.reward.oracle import OracleError, PerDesignOracle  # noqa: E402
from vardbio_oracles.chem import coords_key, smiles_key, to_mol, to_mol_3d  # noqa: E402


DEFAULT_RECEPTOR = "receptors/1hvr_receptor.pdbqt"
DEFAULT_BOX = "receptors/1hvr_box.json"


def prepare_receptor_pdbqt(pdb_text: str) -> str:
    """Rigid-receptor PDBQT text from protein PDB text, with meeko's residue templates
    (polar hydrogens, AutoDock atom types, Gasteiger charges from the templates)."""
    from meeko import MoleculePreparation, PDBQTWriterLegacy, Polymer, ResidueChemTemplates

    polymer = Polymer.from_pdb_string(pdb_text, ResidueChemTemplates.create_from_defaults(),
                                      MoleculePreparation())
    rigid, _flex = PDBQTWriterLegacy.write_from_polymer(polymer)
    return rigid


def ligand_pdbqt(mol: Chem.Mol) -> str:
    """PDBQT text of a 3D RDKit molecule with explicit hydrogens, via meeko."""
    from meeko import MoleculePreparation, PDBQTWriterLegacy

    setups = MoleculePreparation().prepare(mol)
    if len(setups) != 1:
        raise OracleError(f"meeko made {len(setups)} ligand setups; expected 1")
    text, ok, err = PDBQTWriterLegacy.write_string(setups[0])
    if not ok:
        raise OracleError(f"meeko could not write the ligand: {err}")
    return text


def _sha1_file(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


class VinaDocking(PerDesignOracle):
    """Best-pose AutoDock Vina energy of a ligand in a receptor box (kcal/mol, lower is better).

    receptor:       .pdbqt or .pdb path (relative paths are tried against data/ too); default:
                    the shipped 1hvr receptor.
    center, size:   box centre and edge lengths in Å; or `box`, a JSON file with both.
                    Default: the shipped 1hvr box (only with the default receptor).
    exhaustiveness: Vina's number of Monte Carlo runs (1 fast and noisy, 8 standard).
    seed:           Vina's random seed, non-zero (scores are repeatable for a given seed).
    cpu:            threads Vina uses per docking (does not change the score).
    n_poses:        poses Vina keeps (the score is the best one).
    embed:          dock a seeded ETKDG conformer instead of the input conformer.
    """

    name = "vina_docking"
    version = "1"
    units = "kcal/mol"
    higher_is_better = False
    cpu_heavy = True

    def __init__(self, receptor: str | os.PathLike | None = None,
                 center: Sequence[float] | None = None, size: Sequence[float] | None = None,
                 box: str | os.PathLike | None = None, exhaustiveness: int = 8, seed: int = 1,
                 cpu: int = 1, n_poses: int = 1, embed: bool = False):
        if receptor is None:
            receptor = data_dir() / DEFAULT_RECEPTOR
            if center is None and size is None and box is None:
                box = data_dir() / DEFAULT_BOX
        self.receptor = self._resolve(receptor, "receptor")
        if self.receptor.suffix.lower() not in (".pdbqt", ".pdb"):
            raise ValueError(f"receptor must be a .pdbqt or .pdb file, got {self.receptor}")
        if box is not None:
            if center is not None or size is not None:
                raise ValueError("give the box either as `box` (a JSON file) or as center and size")
            box_path = self._resolve(box, "box")
            try:
                spec = json.loads(box_path.read_text())
                center, size = spec["center"], spec["size"]
            except (ValueError, KeyError) as err:
                raise ValueError(f"box file {box_path} must be JSON with 'center' and 'size': {err}") from err
        if center is None or size is None:
            raise ValueError("vina_docking needs a box: center and size (Å), or a box JSON file")
        self.center = [float(c) for c in center]
        self.size = [float(s) for s in size]
        if len(self.center) != 3 or len(self.size) != 3 or min(self.size) <= 0:
            raise ValueError(f"box center and size need 3 numbers each, sizes > 0; got "
                             f"{self.center}, {self.size}")
        if int(seed) == 0:
            raise ValueError("vina_docking seed must be non-zero (Vina takes 0 as 'random seed')")
        if exhaustiveness < 1 or cpu < 1 or n_poses < 1:
            raise ValueError("exhaustiveness, cpu and n_poses must be >= 1")
        self.exhaustiveness, self.seed, self.cpu = int(exhaustiveness), int(seed), int(cpu)
        self.n_poses, self.embed = int(n_poses), bool(embed)
        self.receptor_sha1 = _sha1_file(self.receptor)
        self._vina = None
        self._receptor_pdbqt: str | None = None

    @staticmethod
    def _resolve(path: str | os.PathLike, what: str) -> Path:
        p = Path(path).expanduser()
        if not p.is_file() and not p.is_absolute() and (data_dir() / p).is_file():
            p = data_dir() / p
        if not p.is_file():
            raise ValueError(f"{what} file {p} does not exist")
        return p.resolve()

    def __getstate__(self):
        return {**self.__dict__, "_vina": None}

    def params(self):
        return {"receptor": self.receptor.name, "receptor_sha1": self.receptor_sha1,
                "center": self.center, "size": self.size, "exhaustiveness": self.exhaustiveness,
                "seed": self.seed, "n_poses": self.n_poses, "embed": self.embed}

    def design_key(self, design: Any) -> str:
        return smiles_key(design) if self.embed else coords_key(design)

    def _engine(self):
        if self._vina is None:
            from vina import Vina

            v = Vina(sf_name="vina", cpu=self.cpu, seed=self.seed, verbosity=0)
            if self.receptor.suffix.lower() == ".pdbqt":
                v.set_receptor(str(self.receptor))
            else:
                if self._receptor_pdbqt is None:
                    self._receptor_pdbqt = prepare_receptor_pdbqt(self.receptor.read_text())
                with tempfile.NamedTemporaryFile("w", suffix=".pdbqt", delete=False) as fh:
                    fh.write(self._receptor_pdbqt)
                try:
                    v.set_receptor(fh.name)
                finally:
                    os.unlink(fh.name)
            v.compute_vina_maps(center=self.center, box_size=self.size)  # all atom types
            self._vina = v
        return self._vina

    def prepare(self, design: Any) -> Chem.Mol:
        """The 3D molecule with hydrogens that would be docked; OracleError if impossible."""
        if self.embed:
            mol = Chem.AddHs(to_mol(design))
            if AllChem.EmbedMolecule(mol, randomSeed=abs(self.seed)) != 0:
                raise OracleError("ETKDG could not embed the molecule")
            return mol
        mol = to_mol_3d(design, "vina_docking needs an RDKit Mol with 3D coordinates (or embed=True)")
        return Chem.AddHs(mol, addCoords=True)

    def _energy(self, mol: Chem.Mol):
        v = self._engine()
        try:
            v.set_ligand_from_string(ligand_pdbqt(mol))
            v.dock(exhaustiveness=self.exhaustiveness, n_poses=self.n_poses)
        except (RuntimeError, TypeError) as err:
            raise OracleError(f"vina failed: {err}") from err
        return float(v.energies(n_poses=1)[0][0]), v

    def dock(self, design: Any) -> tuple[float, Chem.Mol]:
        """Best Vina energy (kcal/mol) and the docked pose as an RDKit Mol (with H)."""
        from meeko import PDBQTMolecule, RDKitMolCreate

        energy, v = self._energy(self.prepare(design))
        poses = RDKitMolCreate.from_pdbqt_mol(PDBQTMolecule(v.poses(n_poses=1), skip_typing=True))
        return energy, poses[0]

    def score_one(self, design):
        return self._energy(self.prepare(design))[0]
