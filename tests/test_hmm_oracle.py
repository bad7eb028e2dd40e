"""The hmm_family oracle: HMMER bit scores and E-values of sequences against a profile HMM
(the shipped Pfam PF02826 and the ABC profile built from the training proteome), the
documented no-hit floor, NaN for invalid sequences, the
oracle contract, agreement with hmmsearch's own table, and the protein_family campaign's
hit fractions in summary.json."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

pyhmmer = pytest.importorskip("pyhmmer")

from vardbio.testing import check_oracle_contract  # noqa: E402
from vardbio_oracles.hmm import HMMFamily, read_profile  # noqa: E402

# A made-up Rossmann-fold N-terminus (GxGxxG motif): a strong PF02826 match (~28 bits).
ROSSMANN = "MKVLIVGAGGIGSALAERLAKEGHEVTVADRNPEALEKAKALGLKVIVADVTDEESLKAAL"
UNRELATED = "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRG"  # a weak, negative score
NO_HIT = "ACDEFGHIKLMNPQRSTVWY" * 3  # HMMER finds no domain region
SHORT = "GGGG"
PYHMMER_DATA = Path(pyhmmer.__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def oracle():
    return HMMFamily("PF02826")


def test_contract_nan_for_invalid_sequences(oracle):
    good = [ROSSMANN, UNRELATED, SHORT, ROSSMANN.lower(), "ACDEFGHIKLMNPQRSTVWY" * 3]
    bad = ["", "MKVXLIV", "MKV*", 7, None]
    check_oracle_contract(oracle, good, bad)
    reasons = oracle.score(bad).reasons
    assert "empty" in reasons[0] and "'X'" in reasons[1] and "expected a sequence string" in reasons[3]


def test_scores_agree_across_the_three_kinds(oracle):
    seqs = [ROSSMANN, UNRELATED, SHORT, "ACDEFGHIKLMNPQRSTVWY" * 3]
    bits = oracle.score(seqs).values
    evalue = HMMFamily("PF02826", score="evalue").score(seqs).values
    neglog = HMMFamily("PF02826", score="neglog10_evalue").score(seqs).values
    assert bits[0] > 20 and evalue[0] < 1e-6
    np.testing.assert_allclose(neglog, -np.log10(evalue), rtol=1e-6)
    # the E-value for Z = 1 is the Forward exponential tail of the bit score
    reported = bits > oracle.tau
    np.testing.assert_allclose(evalue[reported], np.exp(-oracle.lam * (bits[reported] - oracle.tau)), rtol=1e-4)
    assert HMMFamily("PF02826", score="evalue").higher_is_better is False and oracle.higher_is_better


def test_no_hit_scores_the_documented_floor_with_a_reason(oracle):
    for kind, floor in (("bits", oracle.tau), ("evalue", 1.0), ("neglog10_evalue", 0.0)):
        result = HMMFamily("PF02826", score=kind).score([SHORT, NO_HIT])
        assert result.values.tolist() == [floor, floor], kind
        assert all(r.startswith("no hit: HMMER found no domain region") for r in result.reasons)
    assert oracle.tau == pytest.approx(-5.1587, abs=1e-4)  # STATS LOCAL FORWARD of PF02826
    weak = oracle.score([ROSSMANN, UNRELATED])
    assert weak.reasons == [None, None] and oracle.tau < weak.values[1] < 0


def test_hits_and_hit_fraction(oracle):
    rows = oracle.hits([ROSSMANN, SHORT, "MKVX"])
    assert [r["hit"] for r in rows] == [True, False, False]
    assert [r["reported"] for r in rows] == [True, False, False]
    assert math.isnan(rows[2]["bits"]) and "'X'" in rows[2]["reason"]
    assert oracle.hit_fraction([ROSSMANN, SHORT, NO_HIT, UNRELATED]) == 0.25
    strict = HMMFamily("PF02826", hit_evalue=1e-30)
    assert strict.hit_fraction([ROSSMANN]) == 0.0
    assert strict.identity() == oracle.identity()  # the threshold does not change the scores


def test_bad_parameters_and_files(tmp_path):
    with pytest.raises(ValueError, match="score must be one of"):
        HMMFamily(score="pvalue")
    with pytest.raises(ValueError, match="hit_evalue"):
        HMMFamily(hit_evalue=0)
    with pytest.raises(FileNotFoundError, match="shipped profiles"):
        HMMFamily(str(tmp_path / "missing.hmm"))
    (tmp_path / "text.hmm").write_text("not a profile\n")
    with pytest.raises(ValueError, match="not a readable HMMER profile"):
        HMMFamily(str(tmp_path / "text.hmm"))
    # two profiles in one file: pick one by name or accession (version optional)
    text = Path(HMMFamily().path).read_text()
    two = tmp_path / "two.hmm"
    two.write_text(text + text.replace("NAME  2-Hacid_dh_C", "NAME  copy").replace("ACC   PF02826.20", "ACC   PF99999.1"))
    with pytest.raises(ValueError, match="give `name`"):
        HMMFamily(str(two))
    assert HMMFamily(str(two), name="copy").profile.name == "copy"
    assert HMMFamily(str(two), name="PF02826").profile.name == "2-Hacid_dh_C"
    # a nucleotide profile is refused
    dna = pyhmmer.plan7.HMM.sample(pyhmmer.easel.Alphabet.dna(), 20, 1)
    with (tmp_path / "dna.hmm").open("wb") as fh:
        dna.write(fh)
    with pytest.raises(ValueError, match="not a protein profile"):
        read_profile(tmp_path / "dna.hmm")


def test_bits_match_hmmsearch_table():
    """HMMER's own hmmsearch table for PF02826 against the proteome in pyhmmer's test data:
    the oracle's bit scores (filters off, Z = 1) equal its full-sequence scores."""
    table, faa = PYHMMER_DATA / "tables" / "PF02826.tbl", PYHMMER_DATA / "seqs" / "938293.PRJEB85.HG003687.faa"
    assert table.is_file() and faa.is_file(), "pyhmmer's test data is not installed"
    expected = {}
    for line in table.read_text().splitlines():
        if not line.startswith("#"):
            fields = line.split()
            expected[fields[0]] = float(fields[5])
    seqs, name = {}, None
    for line in faa.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            seqs[name] = ""
        elif name is not None:
            seqs[name] += line.strip().rstrip("*")
    names = [n for n in expected if n in seqs]
    assert len(names) >= 5
    got = HMMFamily("PF02826").score([seqs[n] for n in names]).values
    np.testing.assert_allclose(got, [expected[n] for n in names], atol=0.1)  # 1 decimal in the table; HMMER 3.3.1 made it, pyhmmer runs 3.4


def test_shipped_abc_profile_finds_its_family_among_heldout_crops():
    """HG003687_ABC (scripts/build_family_hmm.py, training crops only) finds the held-out
    crop that carries the ABC signature motif (E < 1e-20) and almost none of the others, and
    shuffling that crop removes the match."""
    import re

    from vardbio_models.protein_sequence import read_crops

    abc = HMMFamily("HG003687_ABC")
    assert abc.profile.name == "HG003687_ABC" and abc.profile.M == 128
    heldout = read_crops()["heldout"]
    family = [s for s in heldout if re.search(r"[LIVM]SGG[QE]", s)]
    others = [s for s in heldout if s not in family]
    assert len(family) >= 1 and len(others) >= 50
    rows = abc.hits(family + others)
    evalues = np.array([r["evalue"] for r in rows])
    assert np.all(evalues[:len(family)] < 1e-20) and np.mean(evalues[len(family):] < 1e-6) < 0.03
    best = family[int(np.argmin(evalues[:len(family)]))]
    shuffled = "".join(np.random.default_rng(0).permutation(list(best)))
    assert abc.score([shuffled]).values[0] < abc.score([best]).values[0] - 30


def test_summary_reports_hit_fractions_paid_through_the_runtime():
    from vardbio.model.evaluation import EvaluatedDesigns, Evaluation, EvaluationOracles
    from vardbio.reward import OracleRuntime, Reward, RewardTerm
    from vardbio_models.protein_sequence import encode, plugin, read_crops
    from vardbio_oracles.protein import SequenceStability

    model = plugin.load({"length": 64})
    before = [NO_HIT + "A" * 4, SHORT * 16]
    after = [ROSSMANN + "AAA", NO_HIT + "A" * 4]
    terms = [RewardTerm(HMMFamily(), 0.25, name="family_bits"), RewardTerm(SequenceStability())]
    reward = Reward(terms, OracleRuntime("inprocess"))
    evaluated = [EvaluatedDesigns.score(model, *encode(seqs), reward) for seqs in (before, after)]
    assert reward.ledger.total_calls == 8  # 2 terms x 4 designs
    reward.ledger.calls.clear()
    summary = plugin.summarize(Evaluation(model, *evaluated, terms, 0.01, EvaluationOracles(reward.evaluator)))
    extras = summary.summary_entries()
    assert extras["hit_fraction_initial"] == 0.0 and extras["hit_fraction"] == 0.5
    assert extras["hmm_no_hit_fraction_initial"] == 1.0 and extras["hit_evalue"] == 0.01
    assert 0 <= extras["hit_fraction_heldout_natural"] <= 1
    assert extras["hmm_bits_mean"] > extras["hmm_bits_mean_initial"]
    assert extras["domain_metrics"]["hit_fraction"]["label"] == "PF02826 family hits (E-value < 0.01)"
    # every score the summary needed went through the runtime (no cache here): the
    # instability index of the 4 designs, E-values and bit scores of them and of the
    # distinct held-out crops
    heldout = {s[:64] for s in read_crops()["heldout"] if len(s) >= 64}
    assert dict(reward.ledger.calls) == {"instability_index": 4, "hmm_family": 2 * (4 + len(heldout))}


def test_protein_family_campaign_reports_hit_fraction(tmp_path):
    from vardbio.cli import main

    out = tmp_path / "run"
    argv = ["run", "campaign=protein_family", f"out_dir={out}", "progress=false", "report=false",
            "campaign.iterations=1", "campaign.eval_samples=16", "campaign.oracle_budget=64",
            "algorithm.value_samples=32", "algorithm.batch_size=8", "algorithm.value.epochs=2"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["oracle_calls"] <= 64
    for key in ("hit_fraction", "hit_fraction_initial", "hmm_bits_mean", "naturalness", "stability_fraction"):
        assert 0 <= summary[key] <= 1 or key in ("hmm_bits_mean", "naturalness"), key
    assert set(summary["components_final"]) == {"family_bits", "sequence_stability"}
