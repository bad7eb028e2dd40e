"""The protein-sequence plugin: sampling, encoding and bad input, naturalness, design files,
the shipped checkpoint, pretraining and a campaign smoke run (the model contract runs in
tests/test_contracts.py with the plugin's test_options)."""
import json
import math

import numpy as np
import pytest
import torch
from Bio import SeqIO

from vardbio import registry
from vardbio.cli import main
from vardbio.model.checkpoint import read_checkpoint
from vardbio.model.evaluation import score_in_process
from vardbio.value.fitting import ValueFitConfig, fit_value
from vardbio.value.replay import ReplayBuffer
from vardbio_models import protein_sequence as ps

TINY = ps.plugin.test_options[0]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_registered_under_its_entry_point():
    assert registry.load("model", "protein_sequence") is ps.plugin


def test_a_tiny_model_samples_unmasked_sequences():
    torch.manual_seed(0)
    model = ps.plugin.build(TINY)
    traj = model.rollout(4, torch.Generator().manual_seed(1))
    assert traj.final.shape == (4, 12, 21)
    assert traj.final[..., ps.VOCAB].sum() == 0, "a finished sample has no masked position"
    designs = model.decode(traj.final)
    assert all(len(s) == 12 and set(s) <= set(ps.ALPHABET) for s in designs)


def test_encode_decode_round_trip_with_padding():
    seqs = ["ACDEFGHIK", "MLW", "YVTSRQPNMLKIHGFEDCA"]
    x, mask = ps.encode(seqs)
    assert x.shape == (3, 19, 21) and mask.sum(1).tolist() == [9, 3, 19]
    assert ps.decode_states(x, mask) == seqs
    assert x[1, 3:].abs().sum() == 0, "padding positions are all zero"


@pytest.mark.parametrize("bad, words", [(["ACDXZ"], "'XZ' outside"), (["acde"], "'acde' outside"),
                                        ([""], "empty"), (["A" * 20], "more than 10")])
def test_encode_names_bad_sequences(bad, words):
    with pytest.raises(ValueError, match=words):
        ps.encode(bad, length=10 if len(bad[0]) == 20 else None)


@pytest.mark.parametrize("length", [3, 17])
def test_a_length_the_model_cannot_make_is_a_clear_error(length):
    with pytest.raises(ValueError, match=f"cannot make length {length}: it was trained on 4 to 16"):
        ps.plugin.build({**TINY, "length": length})
    model = ps.plugin.build(TINY)
    with pytest.raises(ValueError, match="longer than the model's max_length 16"):
        model.denoiser(torch.zeros(1, 17, 21), torch.ones(1))


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="unknown protein_sequence model options \\['widht'\\]"):
        ps.plugin.build({"widht": 3})


def test_value_head_ignores_padding_and_takes_relaxed_states():
    torch.manual_seed(0)
    head = ps.plugin.value_head(ps.plugin.build(TINY), {"hidden": 16, "depth": 2})
    x, mask = ps.encode(["ACDEFG", "KLMNPQRST"])
    t = torch.tensor([0.3, 0.7])
    noisy = x.clone()
    noisy[0, 6:] = torch.rand(3, 21)  # junk in the padding of the first chain
    assert torch.allclose(head(x, t, mask), head(noisy, t, mask), atol=1e-6)
    alone = head(x[:1, :6], t[:1], None)
    assert torch.allclose(alone, head(x, t, mask)[:1], atol=1e-5), "padding must not change the value"
    soft = torch.softmax(torch.randn(2, 9, 21), -1).requires_grad_(True)
    (grad,) = torch.autograd.grad(head(soft, t, mask).sum(), soft)
    assert grad[:, :6].abs().sum() > 0 and grad[0, 6:].abs().sum() == 0


def test_denoiser_value_head_starts_from_the_trunk_and_fits():
    """kind 'denoiser': the head copies the reference denoiser's trunk (held layers equal to
    it), returns (B,) values on masked and relaxed states, and a short fit on forward-noised
    designs moves its weights and gives a finite held-out R²."""
    torch.manual_seed(0)
    model = ps.plugin.build(TINY)
    head = ps.plugin.value_head(model, {"kind": "denoiser", "train_layers": 0, "hidden": 16, "pool_heads": 2})
    assert torch.equal(head.network.frozen[0].linear1.weight, model.denoiser.encoder.layers[0].linear1.weight)
    g = torch.Generator().manual_seed(0)
    x0 = model.rollout(48, g).final  # (48, 12, 21)
    rewards = x0[..., ps.INDEX["L"]].sum(1).double().numpy()  # leucines per design
    buffer = ReplayBuffer()
    buffer.add(x0, None, rewards)
    traj, times = buffer.noised(model.process, 4, g)
    before = head.network.head[0].weight.detach().clone()
    report = fit_value(head, traj, buffer.rewards, times, ValueFitConfig(epochs=3, patience=0, batch_size=64),
                       generator=torch.Generator().manual_seed(0))
    assert np.isfinite(report.r2) and not torch.equal(before, head.network.head[0].weight)
    values = head(traj.states[2], torch.full((48,), times[2]))
    assert values.shape == (48,) and torch.isfinite(values).all()
    relaxed = torch.softmax(torch.randn(3, 12, 21), -1)
    assert head(relaxed, torch.rand(3)).shape == (3,)
    with pytest.raises(ValueError, match="protein_sequence value head kind 'gru'"):
        ps.plugin.value_head(model, {"kind": "gru"})


def test_naturalness_matches_a_direct_blocked_computation():
    torch.manual_seed(0)
    model = ps.plugin.build(TINY)
    seqs = ["ACDEFGHIKLMN", "MKVLAAGG"]
    got = ps.naturalness(model, seqs, blocks=4)
    for b, seq in enumerate(seqs):
        x, _ = ps.encode([seq])
        total = 0.0
        for offset in range(4):
            x_t = x.clone()
            for i in range(offset, len(seq), 4):
                x_t[0, i] = 0.0
                x_t[0, i, ps.VOCAB] = 1.0
            with torch.no_grad():
                logp = torch.log_softmax(model.denoiser(x_t, torch.tensor([0.25])), -1)[0]
            total += sum(float(logp[i, ps.INDEX[seq[i]]]) for i in range(offset, len(seq), 4))
        assert math.isclose(got[b], total / len(seq), rel_tol=1e-4, abs_tol=1e-5)
    with pytest.raises(ValueError, match="outside the amino-acid alphabet"):
        ps.naturalness(model, ["ACDEB"])


def test_write_designs_fasta_and_scores(tmp_path):
    designs = ["MKVLAAGGLLEEKK" * 5, "ACDEFGHIKLMNPQRSTVWY"]
    files = ps.plugin.write_designs(designs, np.array([0.8, np.nan]), tmp_path / "designs")
    records = list(SeqIO.parse(files[0], "fasta"))
    assert [str(r.seq) for r in records] == designs and records[0].id == "design_0"
    rows = files[1].read_text().splitlines()
    assert rows[0] == "id,sequence,length,reward"
    assert rows[2].endswith(",nan") and rows[1].split(",")[2] == "70" and rows[1].endswith(",0.8")


def test_sequence_statistics_on_known_sets():
    stats = ps.sequence_statistics(["AAAA", "AAAA", "CCCC"], score_in_process, natural=["AAAA", "CCCC"])
    assert stats["uniqueness"] == pytest.approx(2 / 3)
    assert stats["diversity"] == pytest.approx(2 / 3)  # pairs: (A,A)=0, (A,C)=1, (A,C)=1
    assert stats["composition_tv_distance"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="one length"):
        ps.pairwise_diversity(["AAA", "AAAA"])


def test_shipped_checkpoint_samples_natural_like_sequences():
    extra = read_checkpoint(ps.plugin.default_checkpoint({}))["extra"]["pretrain_metrics"]
    # better than a uniform guess (log 1/20 = -3.00) on held-out real proteins
    assert extra["heldout_naturalness"] > -2.9
    assert extra["samples"]["composition_tv_distance"] < 0.1
    model = ps.plugin.load({"length": 32, "sampling_steps": 16}).eval()
    seqs = model.decode(model.rollout(8, torch.Generator().manual_seed(0)).final)
    assert all(len(s) == 32 and set(s) <= set(ps.ALPHABET) for s in seqs)
    assert len(set(seqs)) == 8


def test_pretrain_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "ps.pt"
    assert main(["pretrain", "model=protein_sequence", f"out={out}", "+model.options.steps=3",
                 "+model.options.eval_samples=4", "+model.options.width=32", "+model.options.layers=1",
                 "+model.options.ff=64", "+model.options.log_every=1"]) == 0
    metrics = read_checkpoint(out)["extra"]["pretrain_metrics"]
    assert metrics["n_train_sequences"] > 1500 and metrics["n_heldout_sequences"] > 50
    assert metrics["train_steps"] == 3 and [p["step"] for p in metrics["learning_curve"]] == [1, 2, 3]
    assert metrics["pretrain_config"]["weight_decay"] == 0.01, "the plugin's own loop defaults"
    model = ps.plugin.load({}, out)
    assert model.denoiser.embed.out_features == 32


def test_campaign_smoke_run_writes_fasta_and_summary(tmp_path, real_oracle_calls):
    out = tmp_path / "run"
    assert main(["run", "campaign=protein_stability", f"out_dir={out}", "progress=false", "report=false",
                 "campaign.iterations=2", "campaign.eval_samples=8", "campaign.oracle_budget=16",
                 "campaign.model.options.length=16", "campaign.model.options.sampling_steps=4",
                 "algorithm.value_samples=16", "algorithm.batch_size=4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("stability_fraction", "stability_fraction_initial", "naturalness", "naturalness_initial",
                "naturalness_heldout_natural", "diversity", "diversity_initial", "uniqueness"):
        assert math.isfinite(summary[key]), key
    assert summary["oracle_calls"] <= 16
    # the summary's instability index was paid through the runtime like every other score
    assert sum(real_oracle_calls.values()) == summary["oracle_calls"] + summary["eval_oracle_calls"]
    assert real_oracle_calls["instability_index"] > 0
    assert summary["domain_metrics"]["diversity"]["label"] == "diversity (mean pairwise 1 − sequence identity)"
    records = list(SeqIO.parse(out / "designs_final.fasta", "fasta"))
    assert len(records) == 8 and all(len(r.seq) == 16 for r in records)
