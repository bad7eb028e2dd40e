"""Protein-sequence oracles (Biopython ProtParam).

Design: a `str` of one-letter codes of the 20 standard amino acids (case-insensitive;
whitespace is removed). An empty sequence or one with any other letter (X, B, Z, U, O,
digits, ...) gets NaN with the reason. All are cheap: ~0.1 ms per 100 residues.
"""
from __future__ import annotations

from abc import abstractmethod

import math
from typing import Any

from vardbio.extras import require

require("Bio", extra="protein", what="the protein sequence oracles")

from Bio.SeqUtils.ProtParam import ProteinAnalysis  # noqa: E402

from vardbio.reward.oracle import OracleError, PerDesignOracle  # noqa: E402

AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")


def to_sequence(design: Any) -> str:
    """The cleaned upper-case sequence; OracleError when it is not a protein sequence."""
    if not isinstance(design, str):
        raise OracleError(f"expected a sequence string, got {type(design).__name__}")
    seq = "".join(design.split()).upper()
    if not seq:
        raise OracleError("empty sequence")
    bad = sorted(set(seq) - AMINO_ACIDS)
    if bad:
        raise OracleError(f"non-standard amino-acid letters {''.join(bad)!r} in sequence")
    return seq


class SequenceOracle(PerDesignOracle):
    """Base: the cleaned sequence is the cache key."""

    def design_key(self, design: Any) -> str:
        if isinstance(design, str):
            return "seq:" + "".join(design.split()).upper()
        return super().design_key(design)

    def score_one(self, design):
        return self.compute(ProteinAnalysis(to_sequence(design)))

    @abstractmethod
    def compute(self, analysis: ProteinAnalysis) -> float:
        """The score from Biopython's analysis of the cleaned sequence."""


class InstabilityIndex(SequenceOracle):
    """Guruprasad et al. (1990) instability index; < 40 predicts a stable protein. Lower is
    better; needs at least 2 residues."""

    name = "instability_index"
    units = "instability index (dimensionless)"
    higher_is_better = False

    def compute(self, analysis):
        if len(analysis.sequence) < 2:
            raise OracleError("instability index needs at least 2 residues")
        return analysis.instability_index()


class Gravy(SequenceOracle):
    """Grand average of hydropathy (Kyte & Doolittle 1982). No preferred direction (use a
    transform); higher is more hydrophobic."""

    name = "gravy"
    units = "Kyte-Doolittle hydropathy per residue"
    higher_is_better = None

    def compute(self, analysis):
        return analysis.gravy()


class IsoelectricPoint(SequenceOracle):
    """Isoelectric point (Biopython's Bjellqvist pK set). No preferred direction."""

    name = "isoelectric_point"
    units = "pH"
    higher_is_better = None

    def compute(self, analysis):
        return analysis.isoelectric_point()


class NetCharge(SequenceOracle):
    """Net charge at a given pH (default 7.0), from the same pK set. No preferred direction."""

    name = "net_charge"
    units = "elementary charges"
    higher_is_better = None

    def __init__(self, ph: float = 7.0):
        if not 0.0 <= ph <= 14.0:
            raise ValueError(f"net_charge needs 0 <= ph <= 14, got {ph}")
        self.ph = float(ph)

    def params(self):
        return {"ph": self.ph}

    def compute(self, analysis):
        return analysis.charge_at_pH(self.ph)


class Aromaticity(SequenceOracle):
    """Fraction of F, W and Y (Lobry & Gautier 1994). No preferred direction."""

    name = "aromaticity"
    units = "fraction"
    higher_is_better = None

    def compute(self, analysis):
        return analysis.aromaticity()


class SequenceStability(SequenceOracle):
    """Stability reward from the instability index II: 1 / (1 + exp((II - threshold) / scale)).

    In (0, 1), higher is better; 0.5 at the classic stable/unstable threshold II = 40."""

    name = "sequence_stability"
    units = "probability-like score (0-1)"

    def __init__(self, threshold: float = 40.0, scale: float = 5.0):
        if scale <= 0:
            raise ValueError(f"sequence_stability needs scale > 0, got {scale}")
        self.threshold, self.scale = float(threshold), float(scale)

    def params(self):
        return {"threshold": self.threshold, "scale": self.scale}

    def compute(self, analysis):
        if len(analysis.sequence) < 2:
            raise OracleError("instability index needs at least 2 residues")
        z = (analysis.instability_index() - self.threshold) / self.scale
        return 0.5 * (1.0 - math.tanh(0.5 * z))


# Chou & Fasman (1978, Adv. Enzymol. 47:45) conformational parameters: how often each amino
# acid occurs in helices (P_alpha) and in strands (P_beta) relative to chance.
CHOU_FASMAN_HELIX = {"E": 1.51, "M": 1.45, "A": 1.42, "L": 1.21, "K": 1.16, "F": 1.13, "Q": 1.11,
                     "W": 1.08, "I": 1.08, "V": 1.06, "D": 1.01, "H": 1.00, "R": 0.98, "T": 0.83,
                     "S": 0.77, "C": 0.70, "Y": 0.69, "N": 0.67, "P": 0.57, "G": 0.57}
CHOU_FASMAN_STRAND = {"V": 1.70, "I": 1.60, "Y": 1.47, "F": 1.38, "W": 1.37, "L": 1.30, "C": 1.19,
                      "T": 1.19, "Q": 1.10, "M": 1.05, "R": 0.93, "N": 0.89, "H": 0.87, "A": 0.83,
                      "S": 0.75, "G": 0.75, "K": 0.74, "P": 0.55, "D": 0.54, "E": 0.37}


class HelixPropensity(SequenceOracle):
    """Fraction of residues predicted helical from sequence alone, Chou-Fasman style: a
    residue is helical when some window of `window` residues covering it has mean P_alpha
    >= `threshold` and mean P_alpha > mean P_beta. In [0, 1], higher is more helical.

    A structural property predicted from sequence (a 1978 propensity rule, roughly 50-60 %
    accurate per residue), not a fold; it needs at least `window` residues."""

    name = "helix_propensity"
    units = "fraction of residues"

    def __init__(self, window: int = 6, threshold: float = 1.03):
        if window < 1:
            raise ValueError(f"helix_propensity needs window >= 1, got {window}")
        self.window, self.threshold = int(window), float(threshold)

    def params(self):
        return {"window": self.window, "threshold": self.threshold}

    def compute(self, analysis):
        seq = analysis.sequence
        if len(seq) < self.window:
            raise OracleError(f"helix_propensity needs at least {self.window} residues, got {len(seq)}")
        p_alpha = [CHOU_FASMAN_HELIX[a] for a in seq]
        p_beta = [CHOU_FASMAN_STRAND[a] for a in seq]
        helical = [False] * len(seq)
        for start in range(len(seq) - self.window + 1):
            alpha = sum(p_alpha[start:start + self.window]) / self.window
            beta = sum(p_beta[start:start + self.window]) / self.window
            if alpha >= self.threshold and alpha > beta:
                helical[start:start + self.window] = [True] * self.window
        return sum(helical) / len(seq)
