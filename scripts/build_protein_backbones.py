"""Curate the backbone-fragment training set of vardbio_models.protein_backbone.

Reads every PDB file that ships in MDAnalysisTests' data folder (.pdb, .pdb.gz, .ent),
takes the N, CA, C, O atoms of every chain (first model, first altloc) with the project's
own parser (vardbio_oracles.structure.backbone_from_pdb), splits chains at missing atoms
and at chain breaks (consecutive CA-CA > 4.2 Å), drops duplicate chains (the same CA
distance fingerprint, e.g. copies of one protein in several files), cuts contiguous
windows of LENGTH residues every STRIDE residues, and stores them centred on the CA
centroid, as int16 hundredths of an Ångström.

Writes data/proteins/backbone_fragments.npz with `coords` (n, LENGTH, 4, 3) int16 (0.01 Å),
`source` (n,) file:chain:start strings. Needs MDAnalysisTests at build time only:
    .venv/bin/python scripts/build_protein_backbones.py
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

LENGTH = 32
STRIDE = 8
MAX_CA_CA = 4.2
OUT = Path(__file__).resolve().parents[1] / "data" / "proteins" / "backbone_fragments.npz"


def chain_ids(path: Path) -> list[str]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    ids: list[str] = []
    with opener(path, "rt", errors="replace") as fh:
        for line in fh:
            if line.startswith("ENDMDL"):
                break
            if line.startswith("ATOM") and line[12:16].strip() == "CA" and line[21] not in ids:
                ids.append(line[21])
    return ids


def segments(bb: np.ndarray) -> list[np.ndarray]:
    """Runs of residues with all four atoms and no chain break."""
    ok = np.isfinite(bb).all(axis=(1, 2))
    out, start = [], None
    for i in range(len(bb) + 1):
        good = i < len(bb) and ok[i]
        if good and start is not None and np.linalg.norm(bb[i, 1] - bb[i - 1, 1]) > MAX_CA_CA:
            out.append(bb[start:i])
            start = i
            continue
        if good and start is None:
            start = i
        elif not good and start is not None:
            out.append(bb[start:i])
            start = None
    return [s for s in out if len(s) >= LENGTH]


def main() -> int:
    import MDAnalysisTests

    from vardbio_oracles.structure import backbone_from_pdb

    data = Path(os.path.dirname(MDAnalysisTests.__file__)) / "data"
    files = sorted(p for p in data.rglob("*") if p.name.lower().endswith((".pdb", ".pdb.gz", ".ent")))
    seen, coords, source = set(), [], []
    counts = {"files": len(files), "chains": 0, "duplicate_chains": 0, "segments": 0}
    for path in files:
        try:
            ids = chain_ids(path)
        except (OSError, UnicodeDecodeError):
            continue
        for cid in ids:
            try:
                bb = backbone_from_pdb(path, cid)
            except ValueError:
                continue
            ca = bb[np.isfinite(bb[:, 1]).all(1), 1]
            if len(ca) < LENGTH:
                continue
            fingerprint = hashlib.sha1(np.round(np.linalg.norm(ca[1:] - ca[:-1], axis=1), 1).tobytes()).hexdigest()
            if fingerprint in seen:
                counts["duplicate_chains"] += 1
                continue
            seen.add(fingerprint)
            counts["chains"] += 1
            for seg in segments(bb):
                counts["segments"] += 1
                for start in range(0, len(seg) - LENGTH + 1, STRIDE):
                    frag = seg[start:start + LENGTH]
                    frag = frag - frag[:, 1].mean(0)
                    coords.append(np.round(frag * 100).astype(np.int16))
                    source.append(f"{path.relative_to(data)}:{cid}:{start}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, coords=np.stack(coords), source=np.array(source),
                        note=np.array(f"MDAnalysisTests {MDAnalysisTests.__version__}; length {LENGTH}, stride {STRIDE}"))
    counts["fragments"] = len(coords)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
