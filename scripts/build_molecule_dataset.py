"""Curate the small drug-like SMILES set the molecule model trains on, into data/molecules/.

    .venv/bin/pip download molsets==0.3.1 --no-deps -d /tmp/molsets
    .venv/bin/python scripts/build_molecule_dataset.py --wheel /tmp/molsets/molsets-0.3.1-py3-none-any.whl

(or `--train-csv path/to/train.csv.gz` for an installed molsets: moses/dataset/data/train.csv.gz).

Input: the MOSES training split (Polykovskiy et al. 2020, MIT licence), 1,584,663 SMILES,
read from inside the molsets wheel; nothing is fetched by this script.
Steps, all deterministic:
1. keep molecules that parse, are one fragment, carry no formal charge, contain only the
   elements C N O F S Cl (plus H), have at most `--max-heavy` heavy atoms, and no heavy atom
   with more than 3 hydrogens;
2. write them as canonical non-isomeric SMILES (MOSES has no stereo), de-duplicated;
3. draw `--count` of them with numpy's default_rng(--seed) and write them sorted by
   canonical SMILES to data/molecules/moses_small.smi with a header naming the source.

The 3D conformers are not shipped: `vardbio_models.molecule` embeds them (ETKDG + MMFF)
when it builds its processed cache at pretraining time.
"""
from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")

ROOT = Path(__file__).resolve().parents[1]
ELEMENTS = {"C", "N", "O", "F", "S", "Cl"}
MEMBER = "moses/dataset/data/train.csv.gz"


def read_source(wheel: Path | None, train_csv: Path | None) -> list[str]:
    """The SMILES column of the MOSES training split."""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(MEMBER)
    elif train_csv is not None:
        raw = train_csv.read_bytes()
    else:
        raise ValueError("give --wheel (the molsets wheel) or --train-csv")
    text = gzip.GzipFile(fileobj=io.BytesIO(raw)).read().decode()
    lines = text.splitlines()
    if lines[0].strip() != "SMILES":
        raise ValueError(f"unexpected MOSES header {lines[0]!r}")
    return [line.split(",")[0] for line in lines[1:] if line.strip()]


def keep(smiles: str, max_heavy: int) -> str | None:
    """Canonical non-isomeric SMILES if the molecule passes the filters, else None."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() > max_heavy:
        return None
    if len(Chem.GetMolFrags(mol)) != 1:
        return None
    for atom in mol.GetAtoms():
        if atom.GetSymbol() not in ELEMENTS or atom.GetFormalCharge() != 0:
            return None
        if atom.GetTotalNumHs() > 3 or atom.GetNumRadicalElectrons():
            return None
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path)
    parser.add_argument("--train-csv", type=Path)
    parser.add_argument("--max-heavy", type=int, default=20)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "molecules" / "moses_small.smi")
    args = parser.parse_args()
    source = read_source(args.wheel, args.train_csv)
    # the cheap filter first: MOSES SMILES with too many heavy atoms are most of the set
    kept = sorted({s for s in (keep(x, args.max_heavy) for x in source) if s})
    rng = np.random.default_rng(args.seed)
    chosen = sorted(kept[i] for i in rng.choice(len(kept), size=min(args.count, len(kept)), replace=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# MOSES train split (molsets 0.3.1, MIT licence): {len(source)} SMILES, {len(kept)} pass "
              f"the filters (<= {args.max_heavy} heavy atoms, elements C N O F S Cl, neutral, one "
              f"fragment); {len(chosen)} drawn with seed {args.seed} by scripts/build_molecule_dataset.py\n")
    args.out.write_text(header + "\n".join(chosen) + "\n")
    print(f"{len(source)} source, {len(kept)} kept, {len(chosen)} written to {args.out}")


if __name__ == "__main__":
    main()
