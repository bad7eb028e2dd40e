"""Where the data files the defaults need are found: one place for every plugin and oracle.

    data_path("receptors/1hvr_receptor.pdbqt")   # a shipped file (an absolute path is kept)
    data_dir()                                   # the folder holding them

The folder is `$VARDBIO_DATA_DIR` when that variable is set (it replaces the whole folder);
otherwise the installed package `vardbio_data`: the checkout's `data/` in an editable
install, and in a wheel the files the defaults need, shipped as its package data (receptor,
curated molecules and proteins, profile HMMs, published benchmark tables). Processed caches
that plugins build go under the same folder (`molecules/processed/`), so set
`VARDBIO_DATA_DIR` where an installation cannot be written to.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

ENV = "VARDBIO_DATA_DIR"
PACKAGE = "vardbio_data"


def data_dir() -> Path:
    """The data folder: $VARDBIO_DATA_DIR, else the installed `vardbio_data` package."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    return Path(str(files(PACKAGE)))


def data_path(relative: str | os.PathLike, missing: str | None = None) -> Path:
    """`relative` under data_dir() (an absolute path is returned as it is). With `missing`
    (how to make the file), a file that is not there is a FileNotFoundError naming the
    path, that advice and the environment variable."""
    path = Path(relative)
    if not path.is_absolute():
        path = data_dir() / path
    if missing is not None and not path.is_file():
        raise FileNotFoundError(f"{path} not found; {missing}, or set {ENV} to a folder holding {relative}")
    return path
