"""Vina docking oracle: a fast small-ligand docking, configuration errors, and the 1hvr
re-docking of XK263 (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

from vardbio_oracles.docking import VinaDocking, data_dir


def _embedded(smiles, seed=0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol


@pytest.fixture(scope="module")
def fast_vina():
    return VinaDocking(exhaustiveness=1, seed=7)


def test_small_ligand_docks_at_exhaustiveness_1(fast_vina):
    benzamidine = _embedded("NC(=N)c1ccccc1")
    res = fast_vina.score([benzamidine, Chem.RemoveHs(benzamidine)])
    assert np.isfinite(res.values).all()
    assert -9.0 < res.values[0] < -3.0  # a weak fragment binder, kcal/mol
    assert res.values[1] == res.values[0]  # hydrogens added with coordinates: same ligand
    assert not fast_vina.higher_is_better and fast_vina.units == "kcal/mol"
    # repeatable for a fixed seed, including in a fresh oracle
    assert VinaDocking(exhaustiveness=1, seed=7).score([benzamidine]).values[0] == res.values[0]
    energy, pose = fast_vina.dock(benzamidine)
    assert energy == res.values[0]
    centre = np.array(json.loads((data_dir() / "receptors/1hvr_box.json").read_text())["center"])
    assert np.all(np.abs(pose.GetConformer().GetPositions() - centre) < 11.0 + 2.0)


def test_bad_ligands_give_nan_with_reason(fast_vina):
    flat = Chem.MolFromSmiles("CCO")
    AllChem.Compute2DCoords(flat)
    res = fast_vina.score([Chem.MolFromSmiles("CCO"), flat, "CCO", "xx", None])
    assert np.isnan(res.values).all() and all(res.reasons)
    assert "no conformer" in res.reasons[0] and "2D" in res.reasons[1]
    embed = VinaDocking(exhaustiveness=1, embed=True)
    assert embed.design_key("OCC") == embed.design_key("CCO")
    out = embed.score(["xx"])
    assert np.isnan(out.values[0]) and "unparsable SMILES" in out.reasons[0]


def test_configuration_errors(tmp_path):
    with pytest.raises(ValueError, match="receptor file .* does not exist"):
        VinaDocking(receptor=tmp_path / "missing.pdbqt", center=[0, 0, 0], size=[20, 20, 20])
    with pytest.raises(ValueError, match="needs a box"):
        VinaDocking(receptor=data_dir() / "receptors/1hvr_receptor.pdbqt")
    with pytest.raises(ValueError, match="box file .* does not exist"):
        VinaDocking(box=tmp_path / "nobox.json")
    with pytest.raises(ValueError, match="non-zero"):
        VinaDocking(seed=0)
    with pytest.raises(ValueError, match="3 numbers"):
        VinaDocking(center=[0, 0], size=[1, 1, 1])


def _prepare_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "prepare_receptor.py"
    spec = importlib.util.spec_from_file_location("prepare_receptor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_user_pdb_receptor_and_box(tmp_path, fast_vina):
    """A plain protein PDB plus a box file: prepared with meeko when first used."""
    pytest.importorskip("MDAnalysisTests")
    prep = _prepare_script()
    pdb = tmp_path / "protease.pdb"
    pdb.write_text(prep.protein_pdb(prep.source_pdb().read_text().splitlines(keepends=True)))
    box = tmp_path / "box.json"
    box.write_text((data_dir() / "receptors/1hvr_box.json").read_text())
    user = VinaDocking(receptor=pdb, box=box, exhaustiveness=1, seed=7)
    ligand = _embedded("NC(=N)c1ccccc1")
    assert user.score([ligand]).values[0] == pytest.approx(fast_vina.score([ligand]).values[0],
                                                           abs=0.2)


def test_shipped_receptor_is_reproducible(tmp_path):
    pytest.importorskip("MDAnalysisTests")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_receptor.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    shipped = data_dir() / "receptors"
    for name in ("1hvr_receptor.pdbqt", "1hvr_box.json"):
        assert (tmp_path / name).read_text() == (shipped / name).read_text()


@pytest.mark.slow
def test_redocking_xk263_into_1hvr_under_2_angstrom():
    """Re-dock the crystal ligand from a fresh ETKDG conformer (not the crystal pose)."""
    crystal = Chem.MolFromMolFile(str(data_dir() / "receptors/1hvr_xk263_crystal.sdf"))
    ligand = _embedded(Chem.MolToSmiles(crystal), seed=0)
    vina = VinaDocking(exhaustiveness=8, seed=1, cpu=2)
    energy, pose = vina.dock(ligand)
    rmsd = rdMolAlign.CalcRMS(Chem.RemoveHs(pose), crystal)  # symmetry-aware, no refit
    assert energy < -10.0
    assert rmsd < 2.0
