"""Protein-family oracle: how well a sequence matches a profile HMM (HMMER3 through pyhmmer).

Design: a `str` of one-letter codes of the 20 standard amino acids (case-insensitive;
whitespace removed). An empty sequence or one with any other letter gets NaN with the
reason (the same rule as the sequence oracles in vardbio_oracles.protein).

Score, for the parameter `score`:
- `bits` (default, higher is better): HMMER's full-sequence bit score of the design against
  the profile (the Forward score with the null2 composition correction, as `hmmsearch`
  reports it);
- `evalue` (lower is better): its E-value for a search space of one sequence (Z = 1), i.e.
  the expected number of chance matches at least this good per design scored, which is the
  P-value of the score; every design is scored on its own footing, so a batch scores as its
  designs one by one;
- `neglog10_evalue` (higher is better): -log10 of that E-value, computed from the score and
  the profile's Forward statistics (λ, τ) so that strong matches do not underflow to 0.

All of HMMER's acceleration filters are off (MSV, Viterbi and Forward thresholds 1.0, no
bias filter) and every reporting threshold is infinite, so every design gets its real
score unless HMMER finds *no hit at all*: its posterior decoding finds no domain region
(typical for short or unrelated sequences). Such a design scores the documented no-hit
floor, with the reason kept in the OracleResult ("no hit: ..."):
- bits: τ, the location of the profile's Forward score distribution (the `STATS LOCAL
  FORWARD` line of the HMM file): the score at which the P-value reaches 1, so the floor
  is "no better than chance";
- evalue: 1.0 (= Z · P with P = 1); neglog10_evalue: 0.0 (-log10 of that).
A reported hit can score below τ (its P-value is 1 as well); scores are never clipped.

A design is a *hit* when its E-value is below `hit_evalue` (default 0.01: at most a 1 %
chance per design of a match this good by chance). `hits(designs)` returns every design's
bits, E-value and hit flag; `hit_fraction(designs)` is what campaigns report (the protein
plugins' summary adds hit_fraction and hit_fraction_initial for an `hmm_family` term).

Profiles: `hmm` is a path to an HMMER3 text or binary (`hmmconvert -b`) profile file, or the
name of a profile shipped in data/hmm/ (`PF02826` from Pfam; `HG003687_ABC`, built from the
protein_sequence model's training proteome by scripts/build_family_hmm.py; provenance and
licence in data/README.md; found through vardbio.data, so `VARDBIO_DATA_DIR` applies). A
file holding several profiles needs `name` to pick one (by NAME or ACC, with or without the
version suffix). Nucleotide profiles are refused.

Cost: ~1.5 ms per 64-residue design against a 178-node profile on one core (filters off).
Needs pyhmmer: `pip install 'vardbio[protein]'`.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vardbio.data import data_path
from vardbio.extras import require
from vardbio.reward.oracle import Oracle, OracleError, OracleResult
from vardbio_oracles.protein import to_sequence

pyhmmer = require("pyhmmer", extra="protein", what="the hmm_family oracle")

SCORES = ("bits", "evalue", "neglog10_evalue")
SHIPPED = {"PF02826": "PF02826.hmm", "HG003687_ABC": "HG003687_ABC.hmm"}
NO_HIT_EVALUE = 1.0  # Z · P with Z = 1 and P = 1
# slow/max mode: no acceleration filter, everything reported; Z = 1 for per-design E-values
PIPELINE_OPTIONS = {"Z": 1, "domZ": 1, "bias_filter": False, "F1": 1.0, "F2": 1.0, "F3": 1.0,
                    "E": math.inf, "domE": math.inf}


def resolve_hmm_path(hmm: str | os.PathLike) -> Path:
    """The file of a shipped profile name (see SHIPPED; found through vardbio.data) or of a
    path; FileNotFoundError naming both possibilities when neither exists."""
    text = str(hmm)
    if text in SHIPPED:
        return data_path(f"hmm/{SHIPPED[text]}", missing="see data/README.md for where it comes from")
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"HMM file not found: {path} (give a path to an HMMER3 profile or one of "
                                f"the shipped profiles {sorted(SHIPPED)})")
    return path


def sequence_block(sequences: Sequence[str]):
    """The protein sequences as a pyhmmer DigitalSequenceBlock, each named by its position."""
    alphabet = pyhmmer.easel.Alphabet.amino()
    return pyhmmer.easel.DigitalSequenceBlock(alphabet, [
        pyhmmer.easel.TextSequence(name=str(i), sequence=s).digitize(alphabet) for i, s in enumerate(sequences)])


def sequence_index(hit_or_sequence) -> int:
    """The position of a sequence of `sequence_block` (or of the target of a hit on it)."""
    name = hit_or_sequence.name
    return int(name.decode() if isinstance(name, bytes) else name)


def _strip_version(text: str) -> str:
    return text.split(".")[0] if text.startswith("PF") else text


def read_profile(path: Path, name: str | None = None):
    """The pyhmmer HMM in `path` (text or binary), picked by NAME or accession when the file
    holds several; ValueError naming the profiles found otherwise."""
    try:
        with pyhmmer.plan7.HMMFile(path) as fh:
            profiles = list(fh)
    except (ValueError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable HMMER profile file: {err}") from err
    if not profiles:
        raise ValueError(f"{path} holds no profile")
    labels = [(p.name, p.accession or "") for p in profiles]
    if name is not None:
        wanted = _strip_version(str(name))
        chosen = [p for p, (n, acc) in zip(profiles, labels)
                  if wanted in (n, _strip_version(n), acc, _strip_version(acc))]
        if len(chosen) != 1:
            raise ValueError(f"{path}: {len(chosen)} profiles match name={name!r}; profiles: "
                             f"{[n for n, _ in labels][:20]}")
        profile = chosen[0]
    elif len(profiles) > 1:
        raise ValueError(f"{path} holds {len(profiles)} profiles ({[n for n, _ in labels][:20]}...): "
                         "give `name` to pick one")
    else:
        profile = profiles[0]
    if profile.alphabet != pyhmmer.easel.Alphabet.amino():
        raise ValueError(f"profile {profile.name} in {path} is not a protein profile")
    return profile


class HMMFamily(Oracle):
    """Bit score, E-value or -log10 E-value of a protein sequence against a profile HMM.

    hmm: a shipped profile name (e.g. "PF02826") or a path; name: which profile of a
    multi-profile file; score: "bits" | "evalue" | "neglog10_evalue"; hit_evalue: the
    E-value below which a design counts as a family hit (reports only, not the score).
    """

    name = "hmm_family"
    version = "1"
    units = "bits (HMMER3 full-sequence score)"

    def __init__(self, hmm: str = "PF02826", name: str | None = None, score: str = "bits",
                 hit_evalue: float = 0.01):
        if score not in SCORES:
            raise ValueError(f"hmm_family score must be one of {SCORES}, got {score!r}")
        if not hit_evalue > 0:
            raise ValueError(f"hmm_family hit_evalue must be > 0, got {hit_evalue}")
        self.path = resolve_hmm_path(hmm)
        self.hmm_param = str(hmm)
        self.profile = read_profile(self.path, name)
        self.score_kind = score
        self.hit_evalue = float(hit_evalue)
        self.higher_is_better = score != "evalue"
        self.units = {"bits": "bits (HMMER3 full-sequence score)", "evalue": "E-value (Z = 1)",
                      "neglog10_evalue": "-log10 E-value (Z = 1)"}[score]
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        stats = self.profile.evalue_parameters
        self.tau, self.lam = float(stats.f_tau), float(stats.f_lambda)

    def params(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "accession": self.profile.accession,
                "hmm_sha256": self.sha256[:16], "score": self.score_kind}

    @property
    def no_hit_score(self) -> float:
        """What a design with no hit scores (see the module docstring)."""
        return {"bits": self.tau, "evalue": NO_HIT_EVALUE, "neglog10_evalue": 0.0}[self.score_kind]

    def design_key(self, design: Any) -> str:
        if isinstance(design, str):
            return "seq:" + "".join(design.split()).upper()
        return super().design_key(design)

    def _search(self, sequences: Sequence[str]) -> list[tuple[float, float] | None]:
        """(bits, E-value) per sequence, None where HMMER reports no hit."""
        if not sequences:
            return []
        block = sequence_block(sequences)
        pipeline = pyhmmer.plan7.Pipeline(block.alphabet, **PIPELINE_OPTIONS)
        found: list[tuple[float, float] | None] = [None] * len(sequences)
        for hit in pipeline.search_hmm(self.profile, block):
            found[sequence_index(hit)] = (float(hit.score), float(hit.evalue))
        return found

    def _neglog10(self, bits: float, evalue: float) -> float:
        if evalue > 0:
            return -math.log10(evalue)
        # underflow: P = exp(-λ (s - τ)) for s > τ, E = Z · P with Z = 1
        return self.lam * (bits - self.tau) / math.log(10)

    def hits(self, designs: Sequence[Any]) -> list[dict[str, Any]]:
        """Per design: {"bits", "evalue", "hit", "reported", "reason"}; bits and E-value are
        the no-hit floor where HMMER reports no hit, NaN (with the reason) for an invalid
        design; hit is E-value < hit_evalue."""
        cleaned: list[str | None] = []
        reasons: list[str | None] = []
        for design in designs:
            try:
                cleaned.append(to_sequence(design))
                reasons.append(None)
            except OracleError as err:
                cleaned.append(None)
                reasons.append(f"OracleError: {err}")
        valid = [i for i, s in enumerate(cleaned) if s is not None]
        found = self._search([cleaned[i] for i in valid])
        rows = [{"bits": math.nan, "evalue": math.nan, "hit": False, "reported": False, "reason": why}
                for why in reasons]
        for i, result in zip(valid, found):
            if result is None:
                rows[i] = {"bits": self.tau, "evalue": NO_HIT_EVALUE, "hit": False, "reported": False,
                           "reason": (f"no hit: HMMER found no domain region for {self.profile.name}; "
                                      f"scored the no-hit floor (bits {self.tau:.4g} = the profile's "
                                      "Forward τ, E-value 1)")}
            else:
                bits, evalue = result
                rows[i] = {"bits": bits, "evalue": evalue, "hit": evalue < self.hit_evalue,
                           "reported": True, "reason": None}
        return rows

    def score(self, designs: Sequence[Any]) -> OracleResult:
        rows = self.hits(list(designs))
        values = []
        for row in rows:
            if math.isnan(row["bits"]):
                values.append(math.nan)
            elif self.score_kind == "bits":
                values.append(row["bits"])
            elif self.score_kind == "evalue":
                values.append(row["evalue"])
            else:
                values.append(self._neglog10(row["bits"], row["evalue"]) if row["reported"] else 0.0)
        return OracleResult(np.asarray(values, dtype=np.float64), [row["reason"] for row in rows])

    def hit_fraction(self, designs: Sequence[Any]) -> float:
        """Fraction of designs (invalid ones included, as non-hits) with E-value < hit_evalue."""
        rows = self.hits(list(designs))
        return float(np.mean([row["hit"] for row in rows])) if rows else math.nan
