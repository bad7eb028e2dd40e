"""SELFIES tokens <-> one-hot states <-> RDKit molecules.

Why SELFIES: every string of SELFIES tokens decodes to a valid molecule (Krenn et al.,
Mach. Learn.: Sci. Technol. 1:045024, 2020), so a sampler that emits any token sequence
emits a valid design; SAFE strings are fragment-based SMILES and can be invalid.

A state is (B, L, V+1) one-hot floats over V = 1 + len(tokens) real tokens: index 0 is
PAD (the end of the string; the model learns where a molecule stops), 1.. the SELFIES
tokens, channel V is the diffusion mask. Decoding drops every PAD, joins the remaining
tokens and decodes the SELFIES string.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import selfies as sf
import torch
import torch.nn.functional as F
from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")

PAD = "[PAD]"
# The SELFIES alphabet of the curated MOSES training set (canonical SMILES, no charges or
# stereo); molecules with any other token are left out when the dataset is built.
MOSES_TOKENS = (
    "[#Branch1]", "[#Branch2]", "[#C]", "[#N]", "[=Branch1]", "[=Branch2]", "[=C]", "[=N]",
    "[=O]", "[=Ring1]", "[=Ring2]", "[=S]", "[Br]", "[Branch1]", "[Branch2]", "[C]", "[Cl]",
    "[F]", "[NH1]", "[N]", "[O]", "[P]", "[Ring1]", "[Ring2]", "[S]",
)


class Vocabulary:
    """PAD plus the given SELFIES tokens; `size` = V real tokens (the mask channel is V)."""

    def __init__(self, tokens: Sequence[str] = MOSES_TOKENS):
        if PAD in tokens or len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct and must not include [PAD]")
        self.tokens = (PAD, *tokens)
        self.index = {tok: i for i, tok in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        return len(self.tokens)

    def indices(self, selfies: str, length: int) -> np.ndarray:
        """(length,) token indices of a SELFIES string, PAD-filled; ValueError for an unknown
        token or a string of more than `length` tokens."""
        toks = list(sf.split_selfies(selfies))
        unknown = sorted(set(toks) - set(self.index))
        if unknown:
            raise ValueError(f"SELFIES tokens {unknown} are not in the vocabulary")
        if len(toks) > length:
            raise ValueError(f"SELFIES string has {len(toks)} tokens, more than {length}")
        out = np.zeros(length, dtype=np.int64)
        out[: len(toks)] = [self.index[t] for t in toks]
        return out

    def one_hot(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L) token indices -> (B, L, V+1) one-hot states (mask channel 0)."""
        return F.one_hot(indices.long(), self.size + 1).float()

    def selfies(self, x0: torch.Tensor) -> list[str]:
        """SELFIES strings of (B, L, V+1) states: argmax tokens with PAD (and any leftover
        mask) dropped."""
        out = []
        for row in x0.argmax(-1).tolist():
            out.append("".join(self.tokens[i] for i in row if 0 < i < self.size))
        return out


def selfies_to_mol(selfies: str) -> Chem.Mol | None:
    """The sanitised RDKit molecule of a SELFIES string, or None for an empty one."""
    smiles = sf.decoder(selfies) if selfies else ""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def smiles_to_selfies(smiles: str) -> str:
    """The SELFIES string of a molecule's canonical SMILES; ValueError if RDKit or selfies
    cannot read it."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"unparsable SMILES {smiles!r}")
    try:
        return sf.encoder(Chem.MolToSmiles(mol))
    except sf.EncoderError as err:
        raise ValueError(f"selfies cannot encode {smiles!r}: {err}") from err
