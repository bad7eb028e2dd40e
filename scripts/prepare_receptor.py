"""Prepare the default docking target, HIV-1 protease (PDB 1HVR), into data/receptors/.

    .venv/bin/python scripts/prepare_receptor.py [--out data/receptors]

Input: 1hvr.pdb from the MDAnalysisTests package (the PDB entry with hydrogens).
Steps, all deterministic:
1. keep the protein (ATOM records and the two S-hydroxycysteines, CSO 67 of chains A and B,
   which become plain cysteines: their OD/HD atoms are dropped); drop the ligand XK2 (XK263);
2. write the rigid receptor PDBQT with meeko's residue templates (1hvr_receptor.pdbqt);
3. take XK263's crystal coordinates, assign bond orders from its SMILES and stereo from 3D,
   and write it as 1hvr_xk263_crystal.sdf (the re-docking reference);
4. write the box (1hvr_box.json): centred on the ligand's heavy-atom centroid, a 22 Å cube.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from vardbio_oracles.docking import prepare_receptor_pdbqt

ROOT = Path(__file__).resolve().parents[1]
XK263_SMILES = "O=C1N(Cc2ccc3ccccc3c2)C(Cc2ccccc2)C(O)C(O)C(Cc2ccccc2)N1Cc1ccc2ccccc2c1"
BOX_EDGE = 22.0


def source_pdb() -> Path:
    import MDAnalysisTests.datafiles as df

    return Path(df.__file__).parent / "data" / "1hvr.pdb"


def protein_pdb(lines: list[str]) -> str:
    out = []
    for line in lines:
        if line.startswith("ATOM"):
            out.append(line)
        elif line.startswith("HETATM") and line[17:20] == "CSO":
            if line[12:16].strip() in ("OD", "HD"):
                continue
            out.append("ATOM  " + line[6:17] + "CYS" + line[20:])
        elif line.startswith("TER"):
            out.append(line)
    return "".join(out) + "END\n"


def crystal_ligand(lines: list[str]) -> Chem.Mol:
    block = "".join(l for l in lines if l.startswith("HETATM") and l[17:20] == "XK2")
    mol = Chem.MolFromPDBBlock(block + "END\n", removeHs=False, proximityBonding=True)
    mol = AllChem.AssignBondOrdersFromTemplate(Chem.MolFromSmiles(XK263_SMILES), mol)
    Chem.AssignStereochemistryFrom3D(mol)
    mol.SetProp("_Name", "XK263 (ligand XK2 of PDB 1HVR), crystal pose")
    return mol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "receptors"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = source_pdb().read_text().splitlines(keepends=True)

    (out / "1hvr_receptor.pdbqt").write_text(prepare_receptor_pdbqt(protein_pdb(lines)))
    lig = crystal_ligand(lines)
    with Chem.SDWriter(str(out / "1hvr_xk263_crystal.sdf")) as w:
        w.write(lig)
    centre = lig.GetConformer().GetPositions().mean(0)
    box = {"center": [round(float(c), 3) for c in centre], "size": [BOX_EDGE] * 3,
           "source": "centroid of the XK263 crystal pose in PDB 1HVR; 22 A cube"}
    (out / "1hvr_box.json").write_text(json.dumps(box, indent=1) + "\n")
    print(f"wrote {out}: receptor, box centre {np.round(centre, 3).tolist()}, ligand "
          f"{Chem.MolToSmiles(lig)}")


if __name__ == "__main__":
    main()
