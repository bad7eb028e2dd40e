"""MOSES metrics (models/molecule_string/moses_metrics.py) on hand-made SMILES with known
answers, against MOSES's own shipped test-set values, and scripts/eval_molecule_string.py end
to end on a tiny untrained model."""
import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import AllChem

from vardbio.model.checkpoint import save_model
from vardbio_models.molecule_string import moses_metrics as mm
from vardbio_models.molecule_string import plugin
from vardbio_models.molecule_string.data import read_smiles

ROOT = Path(__file__).resolve().parents[1]
DRUGS = ["CC(=O)Nc1ccc(O)cc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "O=C(O)c1ccccc1O",
         "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "c1ccc(-c2ccccc2)cc1", "CCN(CC)CC", "Clc1ccc(Cl)cc1"]
TINY = {"max_length": 24, "width": 16, "layers": 1, "heads": 2, "ff": 32, "sampling_steps": 4}


def mols(smiles):
    return [Chem.MolFromSmiles(s) for s in smiles]


def test_validity_uniqueness_and_novelty_of_a_hand_made_list():
    samples = ["CCO", "OCC", "C(C", "", "c1ccccc1", "C1=CC=CC=C1", None, "CCN"]
    assert mm.fraction_valid(samples) == pytest.approx(5 / 8)
    valid = mm.valid_canonical(samples)
    assert valid == ["CCO", "CCO", "c1ccccc1", "c1ccccc1", "CCN"]
    assert mm.fraction_unique(valid) == pytest.approx(3 / 5)
    assert mm.fraction_unique(valid, 1) == 1.0
    assert mm.fraction_unique(valid, 2) == 0.5
    assert mm.fraction_unique(valid, 1000) == pytest.approx(3 / 5)  # fewer than k: all of them
    assert mm.novelty(valid, {"CCO", "CCCl"}) == pytest.approx(2 / 3)
    assert mm.novelty(valid, set(valid)) == 0.0
    assert math.isnan(mm.fraction_unique([]))
    assert mm.smiles_of([Chem.MolFromSmiles("OCC"), None]) == ["CCO", ""]


def test_internal_diversity_and_snn_match_brute_force_tanimoto():
    ms = mols(DRUGS)
    fps = mm.fingerprints(ms)
    rd = [AllChem.GetMorganFingerprintAsBitVect(m, 2, nBits=1024) for m in ms]
    sim = np.array([DataStructs.BulkTanimotoSimilarity(f, rd) for f in rd])
    assert (np.unpackbits(fps, axis=1) == np.array([list(f) for f in rd])).all()
    for block in (3, 2048):  # blocked and in one piece
        assert mm.internal_diversity(fps, 1, block=block) == pytest.approx(1 - sim.mean())
        assert mm.internal_diversity(fps, 2, block=block) == pytest.approx(1 - np.sqrt((sim ** 2).mean(1)).mean())
    ref = mm.fingerprints(ms[:3])
    assert mm.nearest_neighbour_similarity(fps, ref, block=3, ref_block=2) == pytest.approx(sim[:, :3].max(1).mean())
    assert mm.nearest_neighbour_similarity(fps, fps) == pytest.approx(1.0)


def test_internal_diversity_of_identical_and_of_disjoint_molecules():
    same = mm.fingerprints(mols(["CCO"] * 5))
    assert mm.internal_diversity(same) == pytest.approx(0.0)
    assert mm.internal_diversity(same, 2) == pytest.approx(0.0)
    disjoint = mm.fingerprints(mols(["C", "O"]))  # one bit each, different bits
    assert mm.internal_diversity(disjoint) == pytest.approx(0.5)
    assert mm.internal_diversity(disjoint, 2) == pytest.approx(1 - math.sqrt(0.5))


def test_fragments_scaffolds_and_cosine_similarity():
    frags = mm.fragment_counts(mols(["CC(=O)Nc1ccc(O)cc1"] * 2))
    assert frags == {"[1*]C(C)=O": 2, "[16*]c1ccc(O)cc1": 2, "[5*]N[5*]": 2}
    assert mm.scaffold(Chem.MolFromSmiles("CCc1ccccc1")) is None  # one ring only
    assert mm.scaffold(Chem.MolFromSmiles("Cc1ccc(-c2ccccc2)cc1")) == "c1ccc(-c2ccccc2)cc1"
    a = mm.scaffold_counts(mols(DRUGS))
    assert mm.cosine_similarity(a, a) == pytest.approx(1.0)
    assert mm.cosine_similarity({"x": 1}, {"y": 3}) == 0.0
    assert mm.cosine_similarity({"x": 1, "y": 1}, {"x": 2}) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(mm.cosine_similarity({}, a))


def test_moses_filters():
    assert len(mm.filter_patterns()) == 502  # 22 MCF + 480 PAINS SMARTS shipped with molsets
    passing = ["CCO", "CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccccc1O"]
    failing = ["C[N+](C)(C)C",                # charged
               "CI",                          # iodine
               "C1CCCCCCC1",                  # 8-membered ring
               "S=C1SC(=Cc2ccccc2)C(=O)N1"]   # ene-rhodanine (PAINS)
    assert [mm.passes_filters(m) for m in mols(passing + failing)] == [True] * 3 + [False] * 4


def test_frechet_distance_of_known_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    assert mm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5.0 + 1.0 + 0.0 + 4.0)
    assert mm.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fcd_with_chemnet_on_fifty_molecules():
    test = read_smiles("moses:test")[:100]
    chemnet = mm.ChemNet(batch_size=64)
    a = chemnet.activations(test[:50])
    assert a.shape == (50, 512)
    g1, g2 = mm.gaussian(a), mm.gaussian(chemnet.activations(test[50:]))
    assert mm.frechet_distance(*g1, *g1) == pytest.approx(0.0, abs=1e-3)  # rank-deficient: ~1e-5
    between = mm.frechet_distance(*g1, *g2)
    assert 1.0 < between < 50.0
    # the same value as fcd-torch's own FCD object
    from fcd_torch import FCD
    assert between == pytest.approx(FCD(device="cpu", n_jobs=1, batch_size=64)(test[:50], test[50:]), rel=1e-4)
    with pytest.raises(ValueError, match="at least two"):
        mm.gaussian(a[:1])


def test_our_properties_and_fingerprints_match_moses_shipped_test_values():
    """molsets ships the statistics moses.get_all_metrics uses; ours must give the same
    per-molecule values for the first test molecules."""
    shipped = mm.shipped_reference("test")
    first = mols(read_smiles("moses:test")[:30])
    ours = mm.properties(first)
    for name in mm.PROPERTIES:
        np.testing.assert_allclose(ours[name], shipped.properties[name][:30], rtol=1e-9, atol=1e-9)
    assert (mm.fingerprints(first) == shipped.fingerprints[:30]).all()


def test_reference_statistics_are_cached_by_their_record(tmp_path):
    source = tmp_path / "ref.smi"
    source.write_text("SMILES\n" + "\n".join(DRUGS) + "\n")
    logs = []
    ref = mm.reference_statistics(str(source), fcd=False, cache=tmp_path / "ref.pt", log=logs.append, chunk=3)
    assert ref.smiles == len(DRUGS) and ref.fcd_mu is None and ref.fingerprints.shape == (len(DRUGS), 128)
    assert ref.record["source_sha1"] and ref.record["fcd_torch"] is None
    assert ref.scaffolds == mm.scaffold_counts(mols(DRUGS)) and len(ref.properties["QED"]) == len(DRUGS)
    again = mm.reference_statistics(str(source), fcd=False, cache=tmp_path / "ref.pt", log=logs.append)
    assert len(logs) == 2 and again.scaffolds == ref.scaffolds  # no rebuild: nothing logged
    fewer = mm.reference_statistics(str(source), max_molecules=3, fcd=False, cache=tmp_path / "ref.pt",
                                    log=logs.append)
    assert fewer.smiles == 3 and "other settings" in logs[2]
    out, seconds = mm.moses_metrics(DRUGS + ["C(C"], fewer, training={"CCN(CC)CC"}, ks=(4, 100))
    assert out["valid"] == pytest.approx(8 / 9) and out["unique@4"] == 1.0 and out["Novelty"] == pytest.approx(7 / 8)
    assert out["SNN/Test"] < 1.0 and out["Frag/Test"] < 1.0  # the cache now holds the first 3 only
    assert "FCD/Test" not in out and out["notes"] == ["unique@100 computed over 8 valid samples"]
    assert {"logP", "SA", "QED", "weight", "QED_mean", "IntDiv", "IntDiv2", "Filters"} <= set(out)
    assert set(seconds) >= {"parse", "SNN", "IntDiv", "properties"}


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_molecule_string", ROOT / "scripts" / "eval_molecule_string.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("VARDBIO_DATA_DIR", str(tmp_path / "data"))
    torch.manual_seed(0)
    paths = []
    for step in (20, 10):
        model = plugin.build(TINY)
        paths.append(save_model(model, tmp_path / f"tiny_step{step}.pt",
                                pretrain_progress={"step": step, "seconds": 3.0 * step}))
    return paths


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_script_evaluates_an_untrained_model_end_to_end(tiny_checkpoints, tmp_path):
    script = _load_script()
    out, training = tmp_path / "res.json", tmp_path / "train.smi"
    training.write_text("\n".join((ROOT / "data" / "molecules" / "moses_small.smi").read_text().splitlines()[:300]))
    common = ["--reference-max", "60", "--training", str(training), "--no-moses-train", "--seed", "1"]
    result = script.main(["--checkpoint", str(tiny_checkpoints[0]), "--n", "16", "--out", str(out), *common])
    saved = json.loads(out.read_text())
    assert saved["step"] == 20 and saved["n"] == 16 and saved["metrics"]["n"] == 16
    for key in ("valid", "unique", "Novelty", "FCD/Test", "IntDiv", "QED", "QED_mean", "pad_inside_fraction"):
        assert key in saved["metrics"], key
    assert saved["test_means"]["QED_mean"] > 0.5 and saved["reference"]["max_molecules"] == 60
    with open(saved["samples_file"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and all(r["selfies"] for r in rows)
    assert result["metrics"]["valid"] == pytest.approx(sum(bool(r["smiles"]) for r in rows) / 16)
    # the samples file evaluates to the same figures
    again = script.main(["--samples", saved["samples_file"], "--out", str(tmp_path / "again.json"), *common])
    assert again["metrics"]["valid"] == pytest.approx(saved["metrics"]["valid"])
    assert again["metrics"]["FCD/Test"] == pytest.approx(saved["metrics"]["FCD/Test"])

    curve = tmp_path / "curve.csv"
    rows = script.main(["--curve", str(tmp_path / "tiny_step*.pt"), "--n", "8", "--no-fcd", "--out", str(curve),
                        *common])
    assert [r["step"] for r in rows] == [10, 20]
    with curve.open() as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in table] == [10, 20] and table[0]["FCD/Test"] == ""
    assert curve.with_suffix(".png").stat().st_size > 10_000
