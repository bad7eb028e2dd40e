"""A third-party plugin package (tests/plugin_pkg, distribution `vardbio-ring`) with its own
pyproject, entry points and Hydra configs: installed into the environment (by `make
install`, or here if missing) and used by `vardbio pretrain` and `vardbio run` without any
change to vardbio."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vardbio import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tests" / "plugin_pkg"
VARDBIO = Path(sys.executable).with_name("vardbio")


def _out_of_date() -> bool:
    """True when vardbio_ring is not installed or differs from tests/plugin_pkg/src."""
    spec = importlib.util.find_spec("vardbio_ring")
    if spec is None:
        return True
    installed = Path(next(iter(spec.submodule_search_locations)))
    source = PACKAGE / "src" / "vardbio_ring"
    for path in source.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".yaml"):
            copy = installed / path.relative_to(source)
            if not copy.is_file() or copy.read_bytes() != path.read_bytes():
                return True
    return False


@pytest.fixture(scope="module", autouse=True)
def installed():
    """The plugin as a user installs it: pip, from its own directory (again if its source
    changed since it was installed)."""
    if _out_of_date():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", str(PACKAGE)], check=True, timeout=300)
        importlib.invalidate_caches()


def vardbio(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(VARDBIO), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_vardbio_itself_does_not_name_the_plugin():
    for path in [ROOT / "pyproject.toml", *ROOT.glob("configs/**/*.yaml"), *ROOT.glob("vardbio/**/*.py")]:
        assert "vardbio_ring" not in path.read_text() and "ring_angle" not in path.read_text(), path


def test_entry_points_register_the_model_and_the_oracle():
    assert "ring" in registry.available("model") and "ring_angle" in registry.available("oracle")
    assert registry.load("model", "ring").name == "ring"


def test_plugin_passes_the_contracts():
    from vardbio.testing import check_model_contract, check_oracle_contract

    ring = registry.load("model", "ring")
    check_model_contract(ring, ring.test_options[0])  # also run by tests/test_contracts.py once installed
    oracle = registry.load("oracle", "ring_angle")(target_degrees=90)
    check_oracle_contract(oracle, [{"x": 0.0, "y": 1.0}, {"x": 1.0, "y": 1.0}],
                          [{"x": 0.0, "y": 0.0}, {"x": float("nan"), "y": 1.0}])


def test_pretrain_and_run_a_campaign_with_the_plugin(tmp_path):
    out = vardbio("pretrain", "model=ring", f"out={tmp_path / 'ring.pt'}", cwd=tmp_path)
    assert "radius_mean" in out
    run = tmp_path / "run"
    out = vardbio("run", "campaign=ring_angle", f"campaign.model.checkpoint={tmp_path / 'ring.pt'}",
                  f"out_dir={run}", "progress=false", cwd=tmp_path)
    assert "ring_angle / vard" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["campaign"] == "ring_angle" and summary["oracle_calls"] == 256
    config = (run / "config.yaml").read_text()
    assert "beta: 0.05" in config, "the plugin's tuning file was applied"
    designs = json.loads((run / "designs_final.json").read_text())   # the plugin's own format
    assert len(designs) == 256 and set(designs[0]) == {"x", "y", "reward"}
    assert summary["reward_final"]["mean"] > summary["reward_initial"]["mean"] + 0.1
    assert (run / "report.md").is_file()
