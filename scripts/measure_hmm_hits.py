"""Hit rates of profile HMMs on designs of a sequence model: how a family for the hmm_family
oracle was chosen (data/README.md, configs/campaign/protein_family.yaml).

For each profile, scores the designs with vardbio_oracles.hmm.HMMFamily (filters off, Z = 1)
and prints the fraction with E-value below each threshold, the fraction with no HMMER hit,
and the bit-score quartiles; the same for the curated natural crops (data/proteins/) cut to
the designs' length, for comparison.

    .venv/bin/vardbio sample model=protein_sequence n=256 out_dir=runs/samples_256
    .venv/bin/python scripts/measure_hmm_hits.py runs/samples_256/designs.fasta \
        --hmm PF02826 --hmm <pyhmmer>/tests/data/hmms/txt/LuxC.hmm

A profile file with several HMMs is scored once per HMM (`--all-in-file`).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from vardbio_models.protein_sequence import read_crops
from vardbio_oracles.hmm import HMMFamily, read_profile, resolve_hmm_path


def read_fasta(path: Path) -> list[str]:
    seqs: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            seqs.append("")
        elif line.strip() and seqs:
            seqs[-1] += line.strip()
    return seqs


def profile_names(hmm: str, all_in_file: bool) -> list[str | None]:
    if not all_in_file:
        return [None]
    import pyhmmer

    with pyhmmer.plan7.HMMFile(resolve_hmm_path(hmm)) as fh:
        return [p.name for p in fh if p.alphabet == pyhmmer.easel.Alphabet.amino()]


def describe(oracle: HMMFamily, seqs: list[str], thresholds: list[float]) -> str:
    rows = oracle.hits(seqs)
    evalues = np.array([r["evalue"] for r in rows])
    bits = np.array([r["bits"] for r in rows])
    no_hit = np.mean([not r["reported"] for r in rows])
    rates = " ".join(f"{np.mean(evalues < t):6.3f}" for t in thresholds)
    q = np.quantile(bits, [0.25, 0.5, 0.75, 1.0])
    return f"{rates}  no_hit {no_hit:5.3f}  bits q25/50/75/max {q[0]:6.2f} {q[1]:6.2f} {q[2]:6.2f} {q[3]:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fasta", type=Path, help="designs (FASTA)")
    parser.add_argument("--hmm", action="append", required=True, help="shipped profile name or HMM file")
    parser.add_argument("--all-in-file", action="store_true", help="score every profile of each file")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    args = parser.parse_args()
    designs = read_fasta(args.fasta)
    length = len(designs[0])
    natural = [s[:length] for s in read_crops()["train"] if len(s) >= length]
    print(f"{len(designs)} designs of {length} residues; {len(natural)} natural crops cut to {length}")
    print("E-value < " + " ".join(f"{t:6.0e}" for t in args.thresholds))
    for hmm in args.hmm:
        for name in profile_names(hmm, args.all_in_file):
            oracle = HMMFamily(hmm, name=name)
            label = f"{oracle.profile.name} ({oracle.profile.accession or Path(hmm).name}, M={oracle.profile.M})"
            print(f"{label}\n  designs  {describe(oracle, designs, args.thresholds)}"
                  f"\n  natural  {describe(oracle, natural, args.thresholds)}")


if __name__ == "__main__":
    main()
