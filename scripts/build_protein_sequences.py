"""Curate the protein-sequence training set of vardbio_models.protein_sequence.

Reads the ~2,100-protein predicted proteome that ships in pyhmmer's test data
(`pyhmmer/tests/data/seqs/938293.PRJEB85.HG003687.faa`), keeps sequences of the 20
standard amino acids (a trailing stop '*' is removed; anything else drops the sequence),
at least MIN_LENGTH residues long, removes exact duplicates and sequences that share a
first 32-residue window with an earlier one (near-identical paralogues), crops each to one
seeded random window of at most CROP residues, and marks about 5 % as a held-out split
(by a hash of the sequence, so the split never depends on order).

Writes data/proteins/hg003687_crops.fasta. Needs pyhmmer at build time only:
    .venv/bin/pip install pyhmmer && .venv/bin/python scripts/build_protein_sequences.py
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

SOURCE = "seqs/938293.PRJEB85.HG003687.faa"
MIN_LENGTH = 40
CROP = 128
SEED = 0
AMINO_ACIDS = set("ACDEFGHIKLMNPQRSTVWY")
OUT = Path(__file__).resolve().parents[1] / "data" / "proteins" / "hg003687_crops.fasta"


def read_fasta(path: Path) -> list[tuple[str, str]]:
    records, name, chunks = [], None, []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if name is not None:
                records.append((name, "".join(chunks)))
            name, chunks = line[1:].split()[0], []
        elif line.strip():
            chunks.append(line.strip())
    if name is not None:
        records.append((name, "".join(chunks)))
    return records


def main() -> int:
    import pyhmmer

    source = Path(os.path.dirname(pyhmmer.__file__)) / "tests" / "data" / SOURCE
    records = read_fasta(source)
    rng = np.random.default_rng(SEED)
    seen, prefixes, kept = set(), set(), []
    counts = {"read": len(records), "nonstandard": 0, "short": 0, "duplicate": 0}
    for name, seq in records:
        seq = seq.upper().rstrip("*")
        if set(seq) - AMINO_ACIDS:
            counts["nonstandard"] += 1
            continue
        if len(seq) < MIN_LENGTH:
            counts["short"] += 1
            continue
        if seq in seen or seq[:32] in prefixes:
            counts["duplicate"] += 1
            continue
        seen.add(seq)
        prefixes.add(seq[:32])
        start = int(rng.integers(0, len(seq) - CROP + 1)) if len(seq) > CROP else 0
        crop = seq[start:start + CROP]
        split = "heldout" if int(hashlib.sha256(seq.encode()).hexdigest(), 16) % 20 == 0 else "train"
        kept.append((name, start, len(seq), split, crop))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as fh:
        fh.write(f"; curated by scripts/build_protein_sequences.py from pyhmmer {pyhmmer.__version__} "
                 f"tests/data/{SOURCE}\n")
        for name, start, full, split, crop in kept:
            fh.write(f">{name} start={start} length={full} split={split}\n{crop}\n")
    counts["kept"] = len(kept)
    counts["heldout"] = sum(k[3] == "heldout" for k in kept)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
