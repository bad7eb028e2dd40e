"""Structure oracles: DSSP against reference files, TM-score and RMSD cases, geometry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vardbio.geometry import random_rotations
from vardbio_oracles.structure import (BackboneRMSD, CAClashes, ChainBreaks, Globularity,
                                       RadiusOfGyration, SecondaryStructure, SoftStrand, TMScore,
                                       backbone_from_pdb, dssp, superposed_rmsd, tm_d0, tm_score)

MDT = pytest.importorskip("MDAnalysisTests")
DSSP_DIR = Path(MDT.__file__).parent / "data" / "dssp"
CHAINS = ["1ahsA", "1bvyF", "1dx5I", "1h4aX", "1i8nA", "1lpbA", "2cviA"]


def _chain(name):
    return backbone_from_pdb(DSSP_DIR / f"{name}.pdb.gz")


def _random_rotation(rng):
    """A uniform random rotation (3, 3) from the core's sampler, seeded from `rng`."""
    seed = int(rng.integers(0, 2**31))
    return random_rotations(1, torch.Generator().manual_seed(seed), dtype=torch.float64)[0].numpy()


@pytest.mark.parametrize("name", CHAINS)
def test_dssp_fractions_match_reference_files(name):
    x = _chain(name)
    ref = (DSSP_DIR / f"{name}.pdb.dssp").read_text().split()[0]
    assert len(ref) == len(x)
    ours = dssp(x)
    assert sum(a != b for a, b in zip(ours, ref)) <= 0.02 * len(ref)
    for kind, code in (("helix", "H"), ("strand", "E"), ("loop", "-")):
        got = SecondaryStructure(kind).score([x]).values[0]
        assert got == pytest.approx(ref.count(code) / len(ref), abs=0.02)


@pytest.mark.parametrize("name", CHAINS)
def test_soft_strand_grades_the_dssp_strand_fraction(name):
    """At DSSP's own cutoff with a near-zero margin every H-bond is 0 or 1 and the graded
    score is exactly the DSSP strand fraction; the relaxed default stays close to it on real
    chains (it credits near-bridges and gives weak H-bonds partial weight)."""
    x = _chain(name)
    strict = SecondaryStructure("strand").score([x]).values[0]
    assert SoftStrand(cutoff=-0.5, margin=1e-6).score([x]).values[0] == pytest.approx(strict)
    assert SoftStrand().score([x]).values[0] == pytest.approx(strict, abs=0.1)
    with pytest.raises(ValueError, match="margin"):
        SoftStrand(margin=0)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PendingDeprecationWarning")
def test_radius_of_gyration_matches_mdanalysis():
    mda = pytest.importorskip("MDAnalysis")
    u = mda.Universe(str(DSSP_DIR / "1bvyF.pdb.gz"))
    ca = u.select_atoms("name CA")
    x = _chain("1bvyF")
    assert RadiusOfGyration().score([x]).values[0] == pytest.approx(
        ca.radius_of_gyration(), rel=1e-6)
    g = Globularity().score([x]).values[0]
    assert 0.8 < g < 1.2  # a folded domain is near the globular expectation
    extended = x.copy()
    extended[:, :, 0] += np.arange(len(x))[:, None] * 3.8  # stretched along x
    assert Globularity().score([extended]).values[0] < 0.5 * g


def test_tm_score_cases():
    rng = np.random.default_rng(0)
    ca = _chain("1bvyF")[:, 1]
    n = len(ca)
    moved = ca @ _random_rotation(rng).T + np.array([10.0, -3.0, 7.0])
    assert tm_score(moved, ca) == pytest.approx(1.0, abs=1e-9)
    # half the chain displaced 40 Å: the best superposition keeps the other half exact
    half = ca.copy()
    half[n // 2:] += np.array([40.0, 0.0, 0.0])
    k = n - n // 2
    expected = (n // 2) / n + k / n / (1 + (40.0 / tm_d0(n)) ** 2)
    assert tm_score(half, ca) == pytest.approx(expected, abs=1e-6)
    # perturbed: lower for more noise, and at least the score of the true superposition
    previous = 1.0
    for sigma in (0.5, 1.0, 2.0, 4.0):
        noisy = ca + rng.normal(0, sigma, ca.shape)
        s = tm_score(noisy, ca)
        d = np.linalg.norm(noisy - ca, axis=1)
        assert (1 / (1 + (d / tm_d0(n)) ** 2)).mean() - 1e-9 <= s < previous
        previous = s
    assert tm_d0(10) == 0.5 and tm_d0(100) == pytest.approx(1.24 * 85 ** (1 / 3) - 1.8)


def test_tm_and_rmsd_oracles(tmp_path):
    x = _chain("1dx5I")
    rng = np.random.default_rng(1)
    rot = _random_rotation(rng)
    moved = x @ rot.T + 5.0
    noisy = x + rng.normal(0, 1.0, x.shape)
    tm = TMScore(target=DSSP_DIR / "1dx5I.pdb.gz")
    res = tm.score([moved, noisy, x[:-1]])
    assert res.values[0] == pytest.approx(1.0)
    assert 0.3 < res.values[1] < 1.0
    assert np.isnan(res.values[2]) and "residues" in res.reasons[2]
    rmsd = BackboneRMSD(target=x)
    vals = rmsd.score([moved, noisy]).values
    assert vals[0] == pytest.approx(0.0, abs=1e-6)
    assert vals[1] == pytest.approx(superposed_rmsd(noisy[:, 1], x[:, 1]))
    assert 1.2 < vals[1] < 1.9  # sqrt(3) * 1.0 Å less what superposition absorbs
    with pytest.raises(ValueError, match="does not exist"):
        TMScore(target=tmp_path / "missing.pdb")


def test_tmtools_backend_names_the_extra():
    try:
        import tmtools  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"vardbio\[tmtools\]"):
            TMScore(target=_chain("1dx5I"), backend="tmtools")
    else:
        pytest.skip("tmtools is installed")


def test_clashes_and_breaks():
    x = _chain("1ahsA")
    assert CAClashes().score([x]).values[0] == 0
    assert ChainBreaks().score([x]).values[0] == 0
    broken = x.copy()
    broken[60:] += 20.0
    assert ChainBreaks().score([broken]).values[0] == 1
    folded = x.copy()
    folded[40] = folded[10] + 0.5  # residue 40 on top of residue 10
    assert CAClashes().score([folded]).values[0] >= 1


@pytest.mark.parametrize("oracle", [SecondaryStructure(), SoftStrand(), RadiusOfGyration(), Globularity(),
                                    CAClashes(), ChainBreaks()])
def test_bad_backbones_give_nan_with_reason(oracle):
    x = _chain("1i8nA")
    missing = x.copy()
    missing[5, 3] = np.nan  # a missing O
    res = oracle.score([x[:, :3], missing, np.zeros((0, 4, 3)), "ACDE", x[:, :, :2]])
    assert np.isnan(res.values).all() and all(res.reasons)
    assert "missing backbone atoms" in res.reasons[0]
    assert "residues [5]" in res.reasons[1]


def test_torch_input_and_key():
    x = _chain("1i8nA")
    o = SecondaryStructure("helix")
    assert o.score([torch.tensor(x)]).values[0] == o.score([x]).values[0]
    assert o.design_key(torch.tensor(x)) == o.design_key(x.copy())
    assert o.design_key(x) != o.design_key(x + 0.05)


def test_pdb_parser_marks_missing_atoms(tmp_path):
    x = _chain("1i8nA")
    text = "".join(
        f"ATOM  {i:5d}  {a:<3s} ALA A{r + 1:4d}    {c[0]:8.3f}{c[1]:8.3f}{c[2]:8.3f}  1.00  0.00\n"
        for i, (r, j, a) in enumerate((r, j, a) for r in range(3) for j, a in
                                      enumerate(("N", "CA", "C", "O")) if not (r == 1 and a == "O"))
        for c in [x[r, j]])
    y = backbone_from_pdb(text)
    assert y.shape == (3, 4, 3) and np.isnan(y[1, 3]).all()
    np.testing.assert_allclose(y[0], x[0], atol=1e-3)


@pytest.mark.parametrize("make", [lambda: SecondaryStructure("strand"), SoftStrand, RadiusOfGyration, Globularity,
                                  CAClashes, ChainBreaks,
                                  lambda: TMScore(target=_chain("1i8nA")),
                                  lambda: BackboneRMSD(target=_chain("1i8nA"))])
def test_plugin_contract(make):
    from vardbio.testing import check_oracle_contract

    x = _chain("1i8nA")
    good = [x, x + np.random.default_rng(0).normal(0, 0.5, x.shape)]
    missing = x.copy()
    missing[3, 0] = np.nan
    check_oracle_contract(make(), good, [missing, x[:, :3], "not a backbone"])


def test_openmm_energy_extra():
    try:
        import openmm  # noqa: F401
    except ImportError:
        from vardbio_oracles.structure import OpenMMEnergy
        with pytest.raises(ImportError, match=r"vardbio\[openmm\]"):
            OpenMMEnergy()
        return
    from vardbio_oracles.structure import OpenMMEnergy

    x = _chain("1i8nA")
    o = OpenMMEnergy()
    energy, pos, elements = o.energy(x)
    heavy = np.array([e != "H" for e in elements])
    # the given heavy atoms are not moved; only the added hydrogens relax
    given = pos[heavy][: 4 * len(x)].reshape(len(x), 4, 3)
    np.testing.assert_allclose(given, x, atol=1e-3)
    noisy = x + np.random.default_rng(0).normal(0, 0.3, x.shape)
    res = o.score([x, noisy, x[:, :3]])
    assert res.values[0] == pytest.approx(energy, rel=1e-4)
    assert res.values[1] > res.values[0] + 100  # a distorted backbone is strained
    assert np.isnan(res.values[2]) and "missing backbone atoms" in res.reasons[2]
