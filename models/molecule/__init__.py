"""3D small molecules: joint equivariant diffusion of coordinates, atom types and bond types.

State: one packed tensor (B, D) over N = `max_atoms` heavy-atom slots with a node mask
(B, N), three parts on one clock (vardbio.processes.joint.JointProcess; see `state`):
coordinates (N, 3) (Gaussian, zero centre of mass, ε-prediction), atom types (N, A+1)
(element and formal charge, masked categorical) and kekulised bond types of the node pairs
(N(N-1)/2, 5) (none, single, double, triple; masked categorical). Hydrogens are implicit
and added back by valence when decoding.

Denoiser: an EGNN of the core's layers on the complete graph of the real atoms with an
edge hidden state read from the noisy bonds; equivariant coordinates, invariant atom and
bond logits (a symmetric pair head). Decoding builds the RDKit molecule from the predicted
atoms and bonds (no distance-based bond perception) and keeps the coordinates as its
conformer. The value network pools the same trunk and is invariant to rotations,
translations and atom permutations.

The package, by concern:
    state      the state layout and the joint process: molecule_process, encode_state;
    data       the curated MOSES set embedded in 3D, as graphs, cached by its parameters;
    networks   bonded EGNN denoiser, value network, atom-count prior;
    decoding   graph -> RDKit molecule and back, DecodeFailure, MoleculeDecoder;
    metrics    sample_quality (stability, validity, connected validity, uniqueness,
               novelty, diversity), property_figures (QED, SA, MMFF strain),
               posebusters_figures (PoseBusters' intramolecular checks);
    plugin     MoleculePlugin, registered as `vardbio_models.molecule:plugin`.

Evaluate a checkpoint: `vardbio sample model=molecule n=1000 seed=1 batch_size=250
[checkpoint=...] out_dir=...` writes the designs and sample_metrics.json.

Needs the `chem` extra (RDKit; PoseBusters for posebusters_figures).
"""
from vardbio.extras import require

require("rdkit", extra="chem", what="the molecule model")

from rdkit import RDLogger  # noqa: E402

RDLogger.DisableLog("rdApp.*")

from vardbio_models.molecule.data import (  # noqa: E402
    DatasetParams, MoleculeDataset, atom_count_histogram, build_dataset, embed, featurise, read_smiles,
    training_smiles,
)
from vardbio_models.molecule.decoding import (  # noqa: E402
    DecodeFailure, Decoded, MoleculeDecoder, build_molecule, canonical, decode_graphs, molecule_graph,
)
from vardbio_models.molecule.metrics import (  # noqa: E402
    diversity, posebusters_figures, property_figures, sample_final_states, sample_quality,
)
from vardbio_models.molecule.networks import (  # noqa: E402
    AtomCountPrior, BondedEGNN, MoleculeDenoiser, MoleculeValueNet, pair_index,
)
from vardbio_models.molecule.plugin import WEIGHTS, MoleculePlugin, plugin  # noqa: E402
from vardbio_models.molecule.state import (  # noqa: E402
    ATOM_TYPES, BOND_TYPES, LossWeights, MoleculeGraph, encode_state, molecule_process, num_pairs, state_graphs,
)

__all__ = [
    "ATOM_TYPES", "AtomCountPrior", "BOND_TYPES", "BondedEGNN", "DatasetParams", "DecodeFailure", "Decoded",
    "LossWeights", "MoleculeDataset", "MoleculeDecoder", "MoleculeDenoiser", "MoleculeGraph", "MoleculePlugin",
    "MoleculeValueNet", "WEIGHTS", "atom_count_histogram", "build_dataset", "build_molecule", "canonical",
    "decode_graphs", "diversity", "embed", "encode_state", "featurise", "molecule_graph", "molecule_process",
    "num_pairs", "pair_index", "plugin", "posebusters_figures", "property_figures", "read_smiles", "sample_final_states",
    "sample_quality", "state_graphs", "training_smiles",
]
