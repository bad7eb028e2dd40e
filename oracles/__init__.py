"""Built-in oracles of vardbio, registered under the `vardbio.oracles` entry points.

chem (RDKit molecules), docking (AutoDock Vina), protein (sequence properties), structure
(backbone geometry, DSSP, TM-score, optional OpenMM energy) and image. Each class documents
its design type, units, direction (`higher_is_better`) and cost.
"""
