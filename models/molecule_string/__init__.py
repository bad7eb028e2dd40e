"""Molecules as SELFIES strings: masked discrete diffusion that is valid by construction."""
from vardbio_models.molecule_string.plugin import MoleculeStringPlugin, plugin

__all__ = ["MoleculeStringPlugin", "plugin"]
