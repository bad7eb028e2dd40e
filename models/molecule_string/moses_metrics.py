"""The MOSES sample-quality metrics (Polykovskiy et al., "Molecular Sets (MOSES)", Front.
Pharmacol. 11:565644, 2020), written for this project after the definitions in molsets 0.3.1
(`moses/metrics/metrics.py` and `utils.py`), whose own functions need pandas (and a pandas API
removed in 2.0) and so cannot be imported here.

Every metric takes generated SMILES, as MOSES does; a model's RDKit molecules are written to
SMILES first (`smiles_of`), so validity is whether that string parses again. What each metric
is computed on, as in MOSES:

- valid: fraction of the samples whose SMILES RDKit parses and sanitises (empty -> invalid).
- unique@k: distinct canonical SMILES among the first k valid samples, over min(k, valid);
  `unique` is the same over all valid samples.
- Novelty: distinct valid canonical SMILES absent from a training set, over distinct valid.
- FCD/Test: Fréchet distance between Gaussians fitted to ChemNet penultimate activations
  (fcd-torch's network and SMILES encoding) of the valid samples (duplicates kept) and of the
  reference set.
- SNN/Test: mean over valid samples of the largest Tanimoto similarity to a reference
  molecule; IntDiv: 1 - mean Tanimoto over all ordered pairs of valid samples, self-pairs and
  duplicates included; IntDiv2: 1 - mean over samples of the root mean squared similarity.
  Fingerprints: Morgan radius 2, 1024 bits; two empty fingerprints count as similarity 1.
- Frag/Test, Scaf/Test: cosine similarity of the BRICS-fragment counts, and of the counts of
  Bemis-Murcko scaffolds with at least two rings, of samples and reference.
- Filters: fraction of valid samples passing the MCF and PAINS SMARTS shipped with molsets,
  with only C N S O F Cl Br H atoms, no charge and no ring of 8 or more atoms.
- logP, SA, QED, weight: Wasserstein-1 distance between the samples' and the reference's
  property values (Crippen logP, RDKit Contrib SA score, QED, average molecular weight);
  the means are reported too (`<name>_mean`).

Reference (test-set) statistics take ~15 minutes on one core for the 176k MOSES test
molecules, so `reference_statistics` caches them, keyed by a record of everything that made
them (input file SHA-1, subset size, RDKit, fcd-torch and torch versions).
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Sequence

import numpy as np
import torch
from rdkit import Chem, RDLogger, rdBase
from rdkit.Chem import AllChem, Crippen, Descriptors, QED, rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold
from scipy import linalg
from scipy.stats import wasserstein_distance

from vardbio_models.molecule_string.data import default_cache, read_smiles, source_path
from vardbio_oracles.chem import SAScore

RDLogger.DisableLog("rdApp.*")

REFERENCE_FORMAT = "moses-reference-1"
FINGERPRINT_BITS = 1024
PROPERTIES = ("logP", "SA", "QED", "weight")
FILTER_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})

Log = Callable[[str], None]


# --- parsing -------------------------------------------------------------------------------

def parse(smiles: str | None) -> Chem.Mol | None:
    """The sanitised molecule of a SMILES string, None for an empty or unreadable one."""
    if not smiles:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    return mol


def canonical(smiles: str | None) -> str | None:
    mol = parse(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def smiles_of(mols: Iterable[Chem.Mol | None]) -> list[str]:
    """SMILES of a model's designs ('' for a failed design), the input of every metric."""
    return ["" if m is None else Chem.MolToSmiles(m) for m in mols]


# --- counting metrics ----------------------------------------------------------------------

def fraction_valid(smiles: Sequence[str | None]) -> float:
    return sum(parse(s) is not None for s in smiles) / len(smiles) if len(smiles) else float("nan")


def valid_canonical(smiles: Iterable[str | None]) -> list[str]:
    """Canonical SMILES of the valid samples, in order, duplicates kept."""
    return [c for c in map(canonical, smiles) if c is not None]


def fraction_unique(valid: Sequence[str], k: int | None = None) -> float:
    """Distinct strings among the first k (all if None) of `valid` canonical SMILES."""
    head = list(valid[:k] if k is not None else valid)
    return len(set(head)) / len(head) if head else float("nan")


def novelty(valid: Iterable[str], training: Collection[str]) -> float:
    """Fraction of the distinct valid canonical SMILES that are not in `training`."""
    distinct = set(valid)
    return len(distinct - set(training)) / len(distinct) if distinct else float("nan")


# --- fingerprints ---------------------------------------------------------------------------

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=FINGERPRINT_BITS)


def fingerprints(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """(N, 128) packed Morgan bits (radius 2, 1024 bits; the bits of RDKit's
    GetMorganFingerprintAsBitVect(mol, 2, nBits=1024) that MOSES uses)."""
    if not len(mols):
        return np.zeros((0, FINGERPRINT_BITS // 8), dtype=np.uint8)
    return np.packbits(np.stack([_MORGAN.GetFingerprintAsNumPy(m) for m in mols]).astype(bool), axis=1)


def _bits(packed: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed, axis=1).astype(np.float32))


def _tanimoto(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len a, len b) Tanimoto similarities of 0/1 rows; 1 where both rows are empty."""
    both = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - both
    return torch.where(union > 0, both / union.clamp_min(1), torch.ones_like(both))


def internal_diversity(packed: np.ndarray, p: int = 1, block: int = 2048) -> float:
    """1 - mean_i (mean_j T_ij^p)^(1/p) over all ordered pairs (i, j) of the rows, i = j
    included (MOSES IntDiv for p = 1, IntDiv2 for p = 2)."""
    n = len(packed)
    if n == 0:
        return float("nan")
    total = torch.zeros(n, dtype=torch.float64)
    for j in range(0, n, block):
        ref = _bits(packed[j:j + block])
        for i in range(0, n, block):
            total[i:i + block] += (_tanimoto(_bits(packed[i:i + block]), ref) ** p).sum(1).double()
    return float(1.0 - ((total / n) ** (1.0 / p)).mean())


def nearest_neighbour_similarity(packed: np.ndarray, reference: np.ndarray, block: int = 2048,
                                 ref_block: int = 16384) -> float:
    """MOSES SNN: mean over the rows of `packed` of the largest Tanimoto similarity to a row
    of `reference` (computed in blocks of block x ref_block similarities)."""
    if len(packed) == 0 or len(reference) == 0:
        return float("nan")
    best = torch.zeros(len(packed))
    for j in range(0, len(reference), ref_block):
        ref = _bits(reference[j:j + ref_block])
        for i in range(0, len(packed), block):
            sims = _tanimoto(_bits(packed[i:i + block]), ref).max(1).values
            best[i:i + block] = torch.maximum(best[i:i + block], sims)
    return float(best.double().mean())


# --- fragments, scaffolds, filters, properties ---------------------------------------------

def fragment_counts(mols: Iterable[Chem.Mol]) -> Counter:
    """Counts of the BRICS fragments (SMILES with dummy atoms) over all molecules."""
    counts: Counter = Counter()
    for mol in mols:
        counts.update(Chem.MolToSmiles(AllChem.FragmentOnBRICSBonds(mol)).split("."))
    return counts


def scaffold(mol: Chem.Mol, min_rings: int = 2) -> str | None:
    """Canonical SMILES of the Bemis-Murcko scaffold, None below `min_rings` rings."""
    try:
        scaf = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    text = Chem.MolToSmiles(scaf)
    return text if text and scaf.GetRingInfo().NumRings() >= min_rings else None


def scaffold_counts(mols: Iterable[Chem.Mol]) -> Counter:
    counts = Counter(scaffold(m) for m in mols)
    counts.pop(None, None)
    return counts


def cosine_similarity(a: Counter, b: Counter) -> float:
    """Cosine of two count vectors indexed by their keys (NaN if either is empty)."""
    if not a or not b:
        return float("nan")
    keys = sorted(set(a) | set(b))
    u = np.array([a.get(k, 0) for k in keys], dtype=np.float64)
    v = np.array([b.get(k, 0) for k in keys], dtype=np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _moses_metrics_dir() -> Path:
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MOSES filter SMARTS come from the molsets package: "
                                "pip install --no-deps molsets")
    return Path(spec.submodule_search_locations[0]) / "metrics"


_FILTERS: list[Chem.Mol] | None = None


def filter_patterns() -> list[Chem.Mol]:
    """The MCF (mcf.csv: names,smarts) and PAINS (wehi_pains.csv: smarts,name) patterns."""
    global _FILTERS
    if _FILTERS is None:
        folder, smarts = _moses_metrics_dir(), []
        with open(folder / "mcf.csv", newline="") as fh:
            smarts += [row["smarts"] for row in csv.DictReader(fh)]
        with open(folder / "wehi_pains.csv", newline="") as fh:
            smarts += [row[0] for row in csv.reader(fh) if row]
        patterns = [Chem.MolFromSmarts(s.strip()) for s in smarts]
        if any(p is None for p in patterns):
            raise ValueError("a MOSES filter SMARTS did not parse")
        _FILTERS = patterns
    return _FILTERS


def passes_filters(mol: Chem.Mol) -> bool:
    """MOSES's medicinal-chemistry filter of one molecule (see the module docstring)."""
    rings = mol.GetRingInfo()
    if any(len(ring) >= 8 for ring in rings.AtomRings()):
        return False
    if any(a.GetFormalCharge() != 0 for a in mol.GetAtoms()):
        return False
    if any(a.GetSymbol() not in FILTER_ATOMS for a in mol.GetAtoms()):
        return False
    with_h = Chem.AddHs(mol)
    if any(with_h.HasSubstructMatch(p) for p in filter_patterns()):
        return False
    text = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(text) and Chem.MolFromSmiles(text) is not None


PROPERTY_FUNCTIONS: dict[str, Callable[[Chem.Mol], float]] = {
    "logP": Crippen.MolLogP, "SA": SAScore().score_one, "QED": QED.qed, "weight": Descriptors.MolWt}


def properties(mols: Sequence[Chem.Mol]) -> dict[str, np.ndarray]:
    return {name: np.array([fn(m) for m in mols], dtype=np.float64) for name, fn in PROPERTY_FUNCTIONS.items()}


# --- FCD ------------------------------------------------------------------------------------

class ChemNet:
    """fcd-torch's ChemNet (weights ship in the wheel) as an activation function."""

    def __init__(self, batch_size: int = 512):
        from fcd_torch import FCD
        self.batch_size = batch_size
        self.model = FCD(device="cpu", n_jobs=1, batch_size=batch_size).model.eval()

    @torch.no_grad()
    def activations(self, smiles: Sequence[str]) -> np.ndarray:
        """(N, 512) penultimate activations; fcd-torch canonicalises each SMILES first."""
        from fcd_torch.utils import SmilesDataset
        loader = torch.utils.data.DataLoader(SmilesDataset(list(smiles)), batch_size=self.batch_size)
        # copy: the network's output is a view of its whole last-layer sequence output, which
        # would otherwise stay alive (~0.2 MB a molecule)
        parts = [self.model(batch.transpose(1, 2).float()).numpy().copy() for batch in loader]
        return np.concatenate(parts) if parts else np.zeros((0, 512), dtype=np.float32)


def gaussian(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N - 1 normalisation, as np.cov) of the activations."""
    if len(activations) < 2:
        raise ValueError("FCD needs at least two molecules")
    acts = activations.astype(np.float64)
    return acts.mean(0), np.cov(acts, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)); the square root is retried with eps
    added to both diagonals if it is not finite, as in fcd-torch."""
    diff = mu1 - mu2
    root = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        offset = np.eye(len(sigma1)) * eps
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has an imaginary part of {np.abs(root.imag).max():.3g}")
        root = root.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


# --- reference statistics -------------------------------------------------------------------

@dataclass
class ReferenceStatistics:
    """What the metrics need of a reference set (the MOSES test split by default):
    fingerprints are packed bits; fcd_mu/fcd_sigma are None when built without ChemNet."""

    record: dict[str, Any]
    smiles: int
    fcd_mu: np.ndarray | None
    fcd_sigma: np.ndarray | None
    properties: dict[str, np.ndarray]
    fragments: Counter
    scaffolds: Counter
    fingerprints: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        return {f"{k}_mean": float(v.mean()) for k, v in self.properties.items()}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def reference_record(source: str, max_molecules: int, fcd: bool) -> dict[str, Any]:
    """Everything that changes the reference statistics."""
    return {"format": REFERENCE_FORMAT, "source": source, "max_molecules": int(max_molecules),
            "source_sha1": hashlib.sha1(source_path(source).read_bytes()).hexdigest(),
            "rdkit": rdBase.rdkitVersion, "fcd_torch": _version("fcd-torch") if fcd else None,
            "torch": torch.__version__.split("+")[0] if fcd else None,
            "fingerprint": f"morgan r2 {FINGERPRINT_BITS} bits"}


def _serves(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether statistics made with record `saved` answer for record `wanted`: the same
    record, or one with ChemNet statistics where none are wanted."""
    if saved == wanted:
        return True
    chemnet = ("fcd_torch", "torch")
    return (wanted["fcd_torch"] is None and saved.get("fcd_torch") is not None
            and {k: v for k, v in saved.items() if k not in chemnet}
            == {k: v for k, v in wanted.items() if k not in chemnet})


def reference_cache(source: str, max_molecules: int) -> Path:
    """data/molecules/processed/moses_reference_<split>[_first<N>].pt ($VARDBIO_DATA_DIR
    replaces data/)."""
    name = source.split(":", 1)[1] if source.startswith("moses:") else Path(source).stem
    suffix = f"_first{max_molecules}" if max_molecules else ""
    return default_cache().parent / f"moses_reference_{name}{suffix}.pt"


def reference_statistics(source: str = "moses:test", max_molecules: int = 0, fcd: bool = True,
                         cache: Path | None = None, chemnet: ChemNet | None = None,
                         log: Log = print, chunk: int = 5000) -> ReferenceStatistics:
    """Statistics of a reference set ('moses:test', 'moses:test_scaffolds' or a SMILES
    file; the first max_molecules if > 0), from `cache` when it was made with the same
    record, and a record without FCD statistics is accepted only if fcd is False."""
    cache = cache or reference_cache(source, max_molecules)
    record = reference_record(source, max_molecules, fcd)
    if cache.is_file():
        blob = torch.load(cache, map_location="cpu", weights_only=False)
        if _serves(blob.get("record", {}), record):
            return ReferenceStatistics(**blob)
        log(f"reference cache {cache} was made with other settings; rebuilding")
    started = time.perf_counter()
    raw = read_smiles(source)
    if max_molecules:
        raw = raw[:max_molecules]
    log(f"reference {source}: {len(raw)} SMILES; computing statistics (one-off, cached at {cache})")
    smiles: list[str] = []
    values: dict[str, list[np.ndarray]] = {name: [] for name in PROPERTIES}
    frags, scafs, packed = Counter(), Counter(), []
    for i in range(0, len(raw), chunk):  # a chunk of molecules at a time bounds the memory
        mols = [m for m in map(parse, raw[i:i + chunk]) if m is not None]
        smiles += [Chem.MolToSmiles(m) for m in mols]
        for name, column in properties(mols).items():
            values[name].append(column)
        frags.update(fragment_counts(mols))
        scafs.update(scaffold_counts(mols))
        packed.append(fingerprints(mols))
    if not smiles:
        raise ValueError(f"no molecule of {source} parses")
    props = {name: np.concatenate(parts) for name, parts in values.items()}
    log(f"  properties, fragments, scaffolds, fingerprints in {time.perf_counter() - started:.0f} s")
    stats: dict[str, Any] = {"read": len(raw), "unparsable": len(raw) - len(smiles)}
    mu = sigma = None
    if fcd:
        t = time.perf_counter()
        mu, sigma = gaussian((chemnet or ChemNet()).activations(smiles))
        log(f"  ChemNet statistics in {time.perf_counter() - t:.0f} s")
    stats["seconds"] = round(time.perf_counter() - started, 1)
    ref = ReferenceStatistics(record, len(smiles), mu, sigma, props, frags, scafs, np.concatenate(packed), stats)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vars(ref), cache)
    return ref


def shipped_reference(split: str = "test") -> ReferenceStatistics:
    """MOSES's own precomputed statistics of a split (moses/dataset/data/<split>_stats.npz
    in molsets, what moses.get_all_metrics uses by default; computed with MOSES's RDKit),
    for cross-checking the statistics computed here. The file is a pickle from the installed
    package."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("molsets is not installed")
    path = Path(spec.submodule_search_locations[0]) / "dataset" / "data" / f"{split}_stats.npz"
    blob = np.load(path, allow_pickle=True)["stats"].item()
    props = {k: np.asarray(blob[k]["values"], dtype=np.float64) for k in PROPERTIES}
    bits = np.asarray(blob["SNN"]["fps"])
    fps = np.packbits(bits.view(bool) if bits.dtype == np.uint8 and bits.max() <= 1 else bits != 0, axis=1)
    return ReferenceStatistics({"format": "moses-shipped", "path": str(path)}, len(fps), blob["FCD"]["mu"],
                               blob["FCD"]["sigma"], props, Counter(blob["Frag"]["frag"]),
                               Counter(blob["Scaf"]["scaf"]), fps)


# --- all metrics ----------------------------------------------------------------------------

def moses_metrics(samples: Sequence[str | None], reference: ReferenceStatistics,
                  training: Collection[str] | None = None,
                  extra_training: dict[str, Collection[str]] | None = None,
                  ks: Sequence[int] = (1000, 10000), chemnet: ChemNet | None = None,
                  snn: bool = True, filters: bool = True) -> tuple[dict[str, Any], dict[str, float]]:
    """(metrics, seconds per metric group) of generated SMILES ('' or None = failed).

    training: canonical SMILES for `Novelty`; extra_training: more sets, reported as
    `Novelty/<name>`; chemnet: needed for FCD/Test (skipped without it or without FCD
    statistics in the reference). unique@k is reported for every k; with fewer than k valid
    samples it is computed over all of them (as MOSES does) and a note says so."""
    seconds: dict[str, float] = {}
    notes: list[str] = []

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t, 2)
        return out

    mols = timed("parse", lambda: [m for m in (parse(s) for s in samples) if m is not None])
    valid = [Chem.MolToSmiles(m) for m in mols]
    out: dict[str, Any] = {"n": len(samples), "n_valid": len(valid),
                           "valid": len(valid) / len(samples) if len(samples) else float("nan")}
    for k in ks:
        out[f"unique@{k}"] = fraction_unique(valid, k)
        if len(valid) < k:
            notes.append(f"unique@{k} computed over {len(valid)} valid samples")
    out["unique"] = fraction_unique(valid)
    if training is not None:
        out["Novelty"] = timed("novelty", lambda: novelty(valid, training))
    for name, ref_set in (extra_training or {}).items():
        out[f"Novelty/{name}"] = timed("novelty", lambda: novelty(valid, ref_set))
    if chemnet is not None and reference.fcd_mu is not None and len(valid) >= 2:
        out["FCD/Test"] = timed("FCD", lambda: frechet_distance(
            *gaussian(chemnet.activations(valid)), reference.fcd_mu, reference.fcd_sigma))
    elif chemnet is not None:
        notes.append("FCD/Test skipped: " + ("fewer than 2 valid samples" if len(valid) < 2
                                             else "reference built without ChemNet"))
    fps = timed("fingerprints", lambda: fingerprints(mols))
    if snn:
        out["SNN/Test"] = timed("SNN", lambda: nearest_neighbour_similarity(fps, reference.fingerprints))
    out["Frag/Test"] = timed("Frag", lambda: cosine_similarity(reference.fragments, fragment_counts(mols)))
    out["Scaf/Test"] = timed("Scaf", lambda: cosine_similarity(reference.scaffolds, scaffold_counts(mols)))
    out["IntDiv"] = timed("IntDiv", lambda: internal_diversity(fps, 1))
    out["IntDiv2"] = timed("IntDiv", lambda: internal_diversity(fps, 2))
    if filters:
        out["Filters"] = timed("Filters", lambda: float(np.mean([passes_filters(m) for m in mols]))
                               if mols else float("nan"))
    props = timed("properties", lambda: properties(mols))
    for name in PROPERTIES:
        values = props[name]
        out[name] = float(wasserstein_distance(reference.properties[name], values)) if len(values) else float("nan")
        out[f"{name}_mean"] = float(values.mean()) if len(values) else float("nan")
    out["heavy_atoms_mean"] = float(np.mean([m.GetNumAtoms() for m in mols])) if mols else float("nan")
    if notes:
        out["notes"] = notes
    return out, seconds
