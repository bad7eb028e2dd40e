"""The distribution: what the wheel holds, what the core depends on, the extras, and an
installed wheel used from outside the checkout.

The end-to-end check builds the wheel from the checkout's files (tracked and untracked, not
ignored, copied to a temporary folder so the checkout gets no build/), installs it with
--no-deps into a new virtual environment whose only other packages are .venv's (added
after its own site-packages by a .pth line, so .venv's editable vardbio is not activated
and the wheel's metadata comes first), and runs `vardbio sample model=protein_sequence` in
a folder outside the checkout. The fast checks below read pyproject.toml and the sources.
"""
import ast
import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from vardbio.extras import MissingExtraError, check, require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
# what the core's required dependencies provide (import names)
CORE_IMPORTS = {"torch", "numpy", "hydra", "omegaconf", "accelerate", "tqdm", "matplotlib"}
# files the defaults read (plugins' shipped data and weights), as installed package paths
SHIPPED = ["vardbio_data/receptors/1hvr_receptor.pdbqt", "vardbio_data/receptors/1hvr_box.json",
           "vardbio_data/proteins/hg003687_crops.fasta", "vardbio_data/molecules/moses_small.smi",
           "vardbio_data/benchmarks/pmo_published.csv", "vardbio_models/weights/molecule.pt",
           "vardbio_models/weights/protein_sequence.pt", "vardbio_models/weights/protein_backbone.pt",
           "vardbio_models/weights/image_digits8.pt", "vardbio_oracles/weights/digits_mlp.npz",
           "vardbio_configs/campaign/protein_stability.yaml", "vardbio_configs/config.yaml"]


def _package_folder(package: str) -> Path:
    """The checkout folder of an installed package name (package-dir mapping)."""
    top, *rest = package.split(".")
    return ROOT / SETUPTOOLS["package-dir"].get(top, top) / Path(*rest)


def _installed_name(path: Path) -> str | None:
    """The installed path (package/...) of a checkout file, or None if it is in no package."""
    for top, folder in SETUPTOOLS["package-dir"].items():
        try:
            return str(Path(top) / path.relative_to(ROOT / folder))
        except ValueError:
            continue
    return None


def _shipped_as_package_data(path: Path) -> bool:
    """True when pyproject's package-data (less exclude-package-data) puts `path` in the wheel."""
    def matches(table: dict) -> bool:
        for package, patterns in table.items():
            folder = _package_folder(package)
            if folder in path.parents and any(fnmatch.fnmatch(str(path.relative_to(folder)), p) for p in patterns):
                return True
        return False
    return matches(SETUPTOOLS["package-data"]) and not matches(SETUPTOOLS.get("exclude-package-data", {}))


def test_every_package_is_listed():
    """A folder with an __init__.py under vardbio/, models/, oracles/, configs/ or data/ is
    a package of the wheel (a missing one would install without its code)."""
    listed = set(SETUPTOOLS["packages"])
    for top, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "build" in rel.parts or any(p.startswith(".") for p in rel.parts):
                continue
            name = ".".join((top, *rel.parts))
            assert name in listed, f"{name} ({init.parent}) is not in pyproject's packages"


def test_the_data_the_defaults_read_is_package_data():
    for installed in SHIPPED:
        top, rest = installed.split("/", 1)
        path = ROOT / SETUPTOOLS["package-dir"][top] / rest
        assert path.is_file(), path
        assert _shipped_as_package_data(path), f"{path} would not be in the wheel"
    assert not _shipped_as_package_data(ROOT / "models/weights/molecule_string_step1737.pt")
    assert not _shipped_as_package_data(ROOT / "data/molecules/processed/moses_small_3d.pt")


def test_the_core_imports_only_its_required_dependencies():
    """Module-level imports of vardbio/ are the standard library, vardbio itself, and the
    packages of pyproject's `dependencies`; anything else is imported inside a function
    (and belongs to an extra)."""
    stdlib = set(sys.stdlib_module_names)
    required = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in PYPROJECT["project"]["dependencies"]}
    assert required == {"torch", "accelerate", "numpy", "hydra-core", "omegaconf", "tqdm", "matplotlib"}
    for path in (ROOT / "vardbio").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top == "vardbio" or top in CORE_IMPORTS, f"{path}: imports {name}"


def test_extras_name_what_they_install_and_test_pulls_all():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "vardbio[all,molscore]" in extras["test"] or "vardbio[all]" in extras["test"]
    (all_,) = extras["all"]
    for extra in ("chem", "docking", "protein", "image", "diffusers", "dask"):
        assert extra in all_[all_.index("[") + 1:-1].split(","), extra
    wanted = {"chem": ["rdkit", "selfies", "fcd-torch", "posebusters"], "docking": ["vina", "meeko", "gemmi"],
              "protein": ["biopython", "pydssp", "pyhmmer"], "image": ["pillow", "scikit-learn"],
              "diffusers": ["diffusers"], "dask": ["dask[distributed]"]}
    for extra, packages in wanted.items():
        for package in packages:
            assert any(r.startswith(package) for r in extras[extra]), f"{package} not in extra {extra}"


def test_a_missing_optional_dependency_names_its_extra():
    assert require("json", extra="chem").__name__ == "json"
    with pytest.raises(MissingExtraError, match=r"the thing needs no_such_module_x.*pip install 'vardbio\[chem\]'"):
        require("no_such_module_x.sub", extra="chem", what="the thing")
    with pytest.raises(MissingExtraError, match=r"pip install 'vardbio\[docking\]'"):
        check("json", "no_such_module_y", extra="docking")
    assert issubclass(MissingExtraError, ImportError)


def test_data_files_are_found_through_one_helper(monkeypatch, tmp_path):
    from vardbio.data import data_dir, data_path

    assert (data_dir() / "README.md").is_file()
    assert data_path("receptors/1hvr_box.json").is_file()
    monkeypatch.setenv("VARDBIO_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path and data_path("x/y.txt") == tmp_path / "x/y.txt"
    assert data_path(ROOT / "README.md") == ROOT / "README.md"
    with pytest.raises(FileNotFoundError, match="rebuild it.*VARDBIO_DATA_DIR"):
        data_path("x/y.txt", missing="rebuild it")


def _checkout_copy(dest: Path) -> Path:
    """The checkout's tracked and untracked (not ignored) files, copied under dest."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the checkout's files")
    work = tmp_path_factory.mktemp("wheel")
    source = _checkout_copy(work / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(work / "dist")], check=True, timeout=600, cwd=work)
    (built,) = (work / "dist").glob("vardbio-*.whl")
    return built


def test_the_wheel_holds_the_code_presets_weights_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for installed in SHIPPED + ["vardbio/data.py", "vardbio_models/molecule/plugin.py", "vardbio_data/__init__.py"]:
        assert installed in names, installed
    assert not [n for n in names if "_step" in n or "/processed/" in n or n.startswith("tests/")]
    assert wheel.stat().st_size < 40_000_000


def test_an_installed_wheel_samples_outside_the_checkout(wheel, tmp_path):
    """pip install the wheel (no dependencies: they come from .venv) into a new environment
    and sample from the shipped protein sequence model in a folder outside the checkout."""
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # .venv's packages after the new environment's own: torch etc. without vardbio's editable finder
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, timeout=300)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VARDBIO_DATA_DIR", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    where = subprocess.run([str(python), "-c", "import vardbio, vardbio_models, vardbio.data as d; "
                            "print(vardbio.__file__, vardbio_models.__file__, d.data_dir())"],
                           cwd=outside, capture_output=True, text=True, env=env, check=True).stdout.split()
    assert all(str(site) in w for w in where), f"not the installed wheel: {where}"
    done = subprocess.run([str(env_dir / "bin" / "vardbio"), "sample", "model=protein_sequence", "n=4",
                           f"out_dir={outside / 'samples'}"], cwd=outside, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fasta = outside / "samples" / "designs.fasta"
    assert fasta.is_file() and fasta.read_text().count(">") == 4
    assert not (outside / "runs").exists() and str(ROOT) not in done.stdout
