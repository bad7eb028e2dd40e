"""Training data of the string model: MOSES SMILES, curated and tokenised as SELFIES.

Source: the MOSES splits inside the `molsets` package (install with
`pip install --no-deps molsets`), read when the cache is built, never at run time. Curation:
RDKit canonical SMILES, duplicates dropped, SELFIES encoding, molecules whose SELFIES has a
token outside the vocabulary or more than max_length tokens dropped (counted). The cache
records every parameter that changes it and is rebuilt when one differs.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import selfies as sf
import torch
from rdkit import Chem, rdBase

from vardbio.data import data_dir
from vardbio_models.molecule_string.vocab import MOSES_TOKENS, Vocabulary, smiles_to_selfies

DATASET_FORMAT = "moses-selfies-1"


def moses_split(split: str) -> Path:
    """The gzipped CSV of a MOSES split ('train', 'test', 'test_scaffolds') in molsets."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MOSES data comes from the molsets package: "
                                "pip install --no-deps molsets")
    path = Path(spec.submodule_search_locations[0]) / "dataset" / "data" / f"{split}.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"MOSES split '{split}' not found at {path}")
    return path


def read_smiles(source: str) -> list[str]:
    """SMILES of a source: 'moses:<split>' or a text file (first column of each line; '#'
    comments and a 'SMILES' header skipped)."""
    if source.startswith("moses:"):
        with gzip.open(moses_split(source.split(":", 1)[1]), "rt") as fh:
            lines = fh.read().splitlines()
    else:
        lines = Path(source).read_text().splitlines()
    out = []
    for line in lines:
        first = line.split(",")[0].split()[0] if line.strip() else ""
        if first and not first.startswith("#") and first.upper() != "SMILES":
            out.append(first)
    return out


def source_path(source: str) -> Path:
    return moses_split(source.split(":", 1)[1]) if source.startswith("moses:") else Path(source)


@dataclass(frozen=True)
class StringDatasetParams:
    """Everything that changes the processed dataset.

    source: 'moses:train' (the molsets split) or a SMILES file; max_length: most SELFIES
    tokens per molecule; max_molecules: keep the first n curated molecules (0 = all)."""

    source: str = "moses:train"
    max_length: int = 48
    max_molecules: int = 0

    def record(self, tokens: Sequence[str]) -> dict[str, Any]:
        """The parameters with the input file's SHA-1, the vocabulary and tool versions."""
        digest = hashlib.sha1(source_path(self.source).read_bytes()).hexdigest()
        return {"format": DATASET_FORMAT, **asdict(self), "source_sha1": digest, "tokens": list(tokens),
                "rdkit": rdBase.rdkitVersion, "selfies": sf.__version__}


@dataclass
class StringDataset:
    """tokens: (N, L) uint8 token indices (0 = PAD); smiles: N canonical SMILES; stats:
    counts of what curation dropped."""

    tokens: torch.Tensor
    smiles: list[str]
    stats: dict[str, Any]

    def __len__(self) -> int:
        return len(self.smiles)


def _curate(args: tuple[list[str], int, tuple[str, ...]]) -> list[tuple[str, np.ndarray] | str]:
    """Canonical SMILES and token indices of a chunk, or the reason a molecule was dropped."""
    chunk, length, tokens = args
    vocab, out = Vocabulary(tokens), []
    for smi in chunk:
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            out.append("unparsable")
            continue
        canonical = Chem.MolToSmiles(mol)
        try:
            out.append((canonical, vocab.indices(smiles_to_selfies(canonical), length)))
        except ValueError as err:
            out.append("too long" if "more than" in str(err) else "token outside the vocabulary")
    return out


def default_cache() -> Path:
    """molecules/processed/moses_selfies.pt under vardbio.data.data_dir()."""
    return data_dir() / "molecules" / "processed" / "moses_selfies.pt"


def build_dataset(params: StringDatasetParams, tokens: Sequence[str] = MOSES_TOKENS,
                  cache: Path | None = None, workers: int = 1, log=print) -> StringDataset:
    """The curated, tokenised dataset, from `cache` when it was made with the same record."""
    cache = cache or default_cache()
    record = params.record(tokens)
    if cache.is_file():
        blob = torch.load(cache, map_location="cpu", weights_only=False)
        if blob.get("record") == record:
            return StringDataset(blob["tokens"], blob["smiles"], blob["stats"])
        log(f"dataset cache {cache} was made with other parameters; rebuilding")
    started = time.perf_counter()
    raw = read_smiles(params.source)
    chunks = [(raw[i:i + 20000], params.max_length, tuple(tokens)) for i in range(0, len(raw), 20000)]
    seen: set[str] = set()
    kept_smiles, kept_tokens = [], []
    stats: dict[str, Any] = {"read": len(raw), "duplicate": 0}
    with Pool(workers) if workers > 1 else _Serial() as pool:
        for done, results in enumerate(pool.imap(_curate, chunks), 1):
            for item in results:
                if isinstance(item, str):
                    stats[item] = stats.get(item, 0) + 1
                elif item[0] in seen:
                    stats["duplicate"] += 1
                else:
                    seen.add(item[0])
                    kept_smiles.append(item[0])
                    kept_tokens.append(item[1])
            log(f"curated {min(done * 20000, len(raw))}/{len(raw)} SMILES "
                f"in {time.perf_counter() - started:.0f} s")
            if params.max_molecules and len(kept_smiles) >= params.max_molecules:
                break
    if params.max_molecules:
        kept_smiles, kept_tokens = kept_smiles[: params.max_molecules], kept_tokens[: params.max_molecules]
    if not kept_smiles:
        raise ValueError(f"no molecule of {params.source} survived curation: {stats}")
    stats["kept"] = len(kept_smiles)
    tensor = torch.as_tensor(np.stack(kept_tokens), dtype=torch.uint8)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"record": record, "tokens": tensor, "smiles": kept_smiles, "stats": stats}, cache)
    return StringDataset(tensor, kept_smiles, stats)


class _Serial:
    """A stand-in for a one-process pool."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def imap(fn, items):
        return map(fn, items)
