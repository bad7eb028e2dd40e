"""3D small molecules: EDM-style joint diffusion of coordinates and atom types with an EGNN.

State: a point cloud x (B, N, F) with a node mask (B, N), N = `max_atoms` heavy atoms, F = 13
features per atom (coordinates, one-hot element, one-hot hydrogen count; see `state`).
Hydrogens are implicit in the state and added back at decode: this halves the number of
nodes (and quarters the edges) relative to explicit-H diffusion, which is what makes
training on one CPU core possible. Decode puts each heavy atom's predicted hydrogens in 3D
(RDKit's AddHs with coordinates) and perceives bonds from the full 3D structure, hydrogens
included, with rdDetermineBonds.

Noise: GaussianProcess with com_dims=3 (exact densities on the zero-CoM subspace), a
linear schedule and ε-prediction. Denoiser: an EGNN of the core's layers; it is
equivariant to rotations, translations and atom permutations; the value head (same layers,
mean-pooled) is invariant to all three.

The package, by concern:
    state      the state layout: encode_state, state_parts;
    data       the curated MOSES set embedded in 3D, cached by its parameters;
    networks   EGNN denoiser, value networks, atom-count prior;
    decoding   bond perception, hydrogen repair, DecodeFailure, decode_molecules;
    metrics    sample_quality (stability, validity, uniqueness, novelty, diversity);
    plugin     MoleculePlugin, registered as `vardbio_models.molecule:plugin`.

Evaluate a checkpoint (sample quality as strict, covalent-radii and hydrogen-repair figures,
novelty against its training set): `vardbio sample model=molecule n=1000 seed=1
batch_size=250 [checkpoint=...] out_dir=...` writes the designs and sample_metrics.json.

Needs the `chem` extra (RDKit).
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
    DecodeFailure, MoleculeDecoder, Perceived, canonical, capped_connectivity, decode_molecules, perceive,
    perceive_state, repair_hydrogens,
)
from vardbio_models.molecule.metrics import diversity, quality_report, sample_final_states, sample_quality  # noqa: E402
from vardbio_models.molecule.networks import (  # noqa: E402
    EGNN, AtomCountPrior, EGNNDenoiser, MoleculeSetValueNet, MoleculeValueNet,
)
from vardbio_models.molecule.plugin import WEIGHTS, MoleculePlugin, plugin  # noqa: E402
from vardbio_models.molecule.state import (  # noqa: E402
    ELEMENTS, FEATURE_SCALE, H_COUNTS, NUM_FEATURES, encode_state, state_parts,
)

__all__ = [
    "AtomCountPrior", "DatasetParams", "DecodeFailure", "EGNN", "EGNNDenoiser", "ELEMENTS", "FEATURE_SCALE",
    "H_COUNTS", "MoleculeDataset", "MoleculeDecoder", "MoleculePlugin", "MoleculeSetValueNet",
    "MoleculeValueNet", "NUM_FEATURES", "Perceived", "WEIGHTS", "atom_count_histogram", "build_dataset",
    "canonical", "capped_connectivity", "decode_molecules", "diversity", "embed", "encode_state", "featurise",
    "perceive", "perceive_state", "plugin", "quality_report", "read_smiles", "repair_hydrogens",
    "sample_final_states", "sample_quality", "state_parts", "training_smiles",
]
