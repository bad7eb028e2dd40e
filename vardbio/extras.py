"""Optional dependencies: domain plugins and oracles need packages the core does not, each
installed by an extra of the `vardbio` distribution (pyproject.toml). A plugin or oracle
module asks for them when it is loaded, so a missing one is one error naming the extra:

    require("rdkit", extra="chem", what="the molecule model")
    # MissingExtraError: the molecule model needs rdkit, which is not installed:
    #   pip install 'vardbio[chem]'
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

PACKAGES = {"rdkit": "rdkit", "selfies": "selfies", "fcd_torch": "fcd-torch", "scipy": "scipy",
            "vina": "vina", "meeko": "meeko", "gemmi": "gemmi", "Bio": "biopython", "pydssp": "pydssp",
            "pyhmmer": "pyhmmer", "PIL": "pillow", "sklearn": "scikit-learn", "diffusers": "diffusers",
            "peft": "peft", "dask": "dask[distributed]"}
"""The distribution that installs each import name (where they differ or for the message)."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming `extra` (`pip install
    'vardbio[<extra>]'`) when it is not installed. An ImportError raised inside an
    installed module (a broken installation) is not hidden."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise
        raise _missing(module, extra, what) from err


def check(*modules: str, extra: str, what: str | None = None) -> None:
    """Raise MissingExtraError (as require does) unless every top-level module is installed,
    without importing any: for modules that are heavy or order-sensitive to import."""
    for module in modules:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise _missing(module, extra, what)


def _missing(module: str, extra: str, what: str | None) -> MissingExtraError:
    top = module.split(".")[0]
    return MissingExtraError(f"{what or module} needs {PACKAGES.get(top, top)}, which is not installed: "
                             f"pip install 'vardbio[{extra}]'")
