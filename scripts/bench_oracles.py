"""Throughput of the built-in oracles through the OracleRuntime.

    .venv/bin/python scripts/bench_oracles.py [--quick] [--out bench_oracles.json]

For each oracle: designs per second with the process executor at 1 and 2 worker processes
(workers started and the oracle loaded by a warm-up batch first, so pool start-up is not
counted; no cache; best of 3 interleaved trials), and the cost of a cache hit (a second pass over the same designs with a
SQLite cache, every design a hit). Designs are real: the 100 ZINC molecules of RDKit's
SA_Score reference set (3D by ETKDG where needed), protein chains and sequences from
MDAnalysisTests, and scikit-learn's 8x8 digits. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import AllChem, rdMolDescriptors

from vardbio.reward.runtime import OracleRuntime

THREE = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
         "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
         "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V"}


def molecules():
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "data", "zim.100.txt")
    return [line.split("\t")[0] for line in open(path).read().splitlines()[1:]]


def embedded(smiles, n):
    out = []
    for s in smiles:
        m = Chem.AddHs(Chem.MolFromSmiles(s))
        if AllChem.EmbedMolecule(m, randomSeed=0) == 0:
            out.append(m)
        if len(out) == n:
            break
    return out


def chains():
    import gzip

    import MDAnalysisTests

    from vardbio_oracles.structure import backbone_from_pdb
    folder = Path(MDAnalysisTests.__file__).parent / "data" / "dssp"
    backbones, seqs = [], []
    for f in sorted(folder.glob("*.pdb.gz")):
        if "failing" in f.name:
            continue
        x = backbone_from_pdb(f)
        if np.isfinite(x).all() and len(x) >= 10:
            backbones.append(x)
        seen, seq = set(), []
        for line in gzip.open(f, "rt"):
            if line.startswith("ATOM") and line[12:16] == " CA " and line[22:27] not in seen:
                seen.add(line[22:27])
                seq.append(THREE.get(line[17:20], ""))
        seqs.append("".join(seq))
    return backbones, seqs


def timed(rt, oracle, designs):
    t = time.perf_counter()
    res = rt.evaluate(oracle, designs)
    return time.perf_counter() - t, res


def bench(name, oracle, designs, chunk, reps=1, workers=(1, 2), trials=3):
    """Designs/s over `reps` passes of the batch (the runtime de-duplicates within a
    batch only, so every pass makes len(designs) real calls); best of `trials` timings,
    1- and 2-worker trials interleaved, since the cores may be shared with other work."""
    row = {"oracle": name, "n": len(designs) * reps, "chunk_size": chunk}
    pools = {w: OracleRuntime(executor="process", max_workers=w, chunk_size=chunk,
                              progress=None) for w in workers}
    try:
        for w, rt in pools.items():
            # start every worker and load the oracle in it (each gets at least one chunk)
            warm = (list(designs) * (2 * w * chunk))[: 2 * w * chunk]
            rt.evaluate(oracle, warm)
        best = {w: float("inf") for w in workers}
        for _ in range(trials):
            for w, rt in pools.items():
                dt = 0.0
                for _ in range(reps):
                    t, res = timed(rt, oracle, designs)
                    dt += t
                best[w] = min(best[w], dt)
                row["failed"] = int(np.isnan(res.values).sum())
    finally:
        for rt in pools.values():
            rt.close()
    for w in workers:
        row[f"per_s_{w}w"] = reps * len(designs) / best[w]
    with tempfile.TemporaryDirectory() as tmp:
        rt = OracleRuntime(executor="inprocess", cache=Path(tmp) / "c.sqlite", progress=None)
        rt.evaluate(oracle, designs)
        calls = rt.ledger.total_calls
        dt, res = timed(rt, oracle, designs)
        assert res.from_cache.all() and rt.ledger.total_calls == calls
        row["cache_hit_us"] = dt / len(designs) * 1e6
        rt.cache.close()
    print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in row.items() if k != "oracle"), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer designs (a smoke run)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--only", default=None, help="run only oracles whose name contains this")
    ap.add_argument("--ligands", type=int, default=8, help="ligands for the docking row")
    args = ap.parse_args()
    q = args.quick
    r = 1 if q else 5

    from sklearn.datasets import load_digits

    from vardbio_oracles import chem, docking, image, protein, structure

    smiles = molecules()
    mols3d = embedded(smiles, 10 if q else 40)
    small = [m for m in embedded(smiles, 100)
             if rdMolDescriptors.CalcNumRotatableBonds(m) <= 4][: 4 if q else args.ligands]
    backbones, seqs = chains()
    digits = [2 * x / 16.0 - 1 for x in load_digits().images[: 50 if q else 300]]
    target = backbones[0]
    # TM-score needs equal lengths: perturbed copies of the first chain
    rng = np.random.default_rng(0)
    tm_designs = [target + rng.normal(0, s, target.shape) for s in np.linspace(0.2, 3, 10 if q else 40)]

    cases = [  # name, oracle factory, designs, chunk size, passes
        ("qed", chem.QEDOracle, smiles, 16, r),
        ("sa_score", chem.SAScore, smiles, 16, r),
        ("structural_alerts (PAINS)", chem.StructuralAlerts, smiles, 16, r),
        ("mmff_strain", chem.MMFFStrain, mols3d, 4, 1),
        ("vina_docking (exh. 1)", lambda: docking.VinaDocking(exhaustiveness=1), small, 1, 1),
        ("instability_index", protein.InstabilityIndex, seqs, 16, 4 * r),
        ("ss_fraction (DSSP)", lambda: structure.SecondaryStructure("helix"), backbones, 4, r),
        ("tm_score", lambda: structure.TMScore(target=target), tm_designs, 4, 1),
        ("jpeg_compressibility", image.JpegCompressibility, digits, 16, r),
        ("digit_probability", lambda: image.DigitProbability(0), digits, 16, r),
    ]
    rows = [bench(name, make(), designs, chunk, reps=reps)
            for name, make, designs, chunk, reps in cases
            if args.only is None or args.only in name]
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}")
    print("| oracle | designs | chunk | designs/s, 1 worker | designs/s, 2 workers | "
          "speed-up | cache hit (µs/design) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['oracle']} | {r['n']} | {r['chunk_size']} | {r['per_s_1w']:.3g} | "
              f"{r['per_s_2w']:.3g} | {r['per_s_2w'] / r['per_s_1w']:.2f}x | "
              f"{r['cache_hit_us']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
