"""The EvoDiff adapter: a tiny OA-DM ByteNet with random weights (nothing downloaded), saved in
EvoDiff's released checkpoint format by the test, passes the model contract, computes the
same logits as EvoDiff's own forward pass on token ids, loads from the `.tar` format, trains
LoRA only, and runs a short campaign through the command line.

Skipped, with the reason, where EvoDiff's network code is not installed
(`pip install --no-deps evodiff sequence-models fair-esm`)."""
import json
from importlib import metadata

import numpy as np
import pytest
import torch

from vardbio_models.evodiff_adapter import (
    PRESETS, evodiff_network_module, evodiff_tokens, plugin, read_released_weights,
)

evodiff_network_module()  # `make install` installs evodiff; without it this module fails loudly

from vardbio.testing import check_model_contract  # noqa: E402
from vardbio_models.protein_sequence import ALPHABET, encode  # noqa: E402

TINY = {"d_model": 16, "n_layers": 2, "kernel_size": 3, "length": 12, "sampling_steps": 6}


def _released_file(path, options=TINY, seed=0):
    """A random tiny OA-DM saved as EvoDiff's train.py saves checkpoints (DDP-prefixed keys,
    optimiser and scheduler state, step counters); returns (path, network)."""
    torch.manual_seed(seed)
    network = plugin.build(options).denoiser.network
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    network(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1)).sum().backward()
    optimizer.step()
    scheduler.step()
    torch.save({"step": 1, "tokens": 4, "epoch": 0,
                "model_state_dict": {"module." + k: v for k, v in network.state_dict().items()},
                "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict()}, path)
    return path, network


def _states(seqs, masked_every=3):
    x0, _ = encode(seqs)
    hide = torch.zeros(x0.shape[:2])
    hide[:, ::masked_every] = 1.0
    x = x0 * (1 - hide[..., None])
    x[..., 20] += hide
    tokens, mask_id, _ = evodiff_tokens()
    ids = torch.tensor(tokens)[x.argmax(-1)]
    return x, ids


def test_tokens_follow_evodiffs_tokenizer():
    from sequence_models.constants import MASK, MSA_ALPHABET

    tokens, mask_id, n_tokens = evodiff_tokens()
    assert MSA_ALPHABET[:20] == ALPHABET and tokens[:20] == list(range(20))
    assert tokens[20] == mask_id == MSA_ALPHABET.index(MASK) == 28 and n_tokens == len(MSA_ALPHABET) == 31
    try:  # the full evodiff import needs pandas and pkg_resources, often missing
        from evodiff.utils import Tokenizer
    except ImportError:
        return
    tok = Tokenizer()
    assert tok.mask_id == mask_id and [tok.a_to_i[a] for a in ALPHABET] == tokens[:20]


def test_denoiser_equals_evodiffs_forward_on_token_ids():
    torch.manual_seed(0)
    model = plugin.build(TINY)
    network = model.denoiser.network.eval()
    x, ids = _states(["ACDEFGHIKLMN", "WYVTSRQPNMLK"])
    with torch.no_grad():
        ours = model.denoiser(x, torch.full((2,), 0.5), None)
        theirs = network(ids, torch.zeros(2, dtype=torch.long))
    assert ours.shape == (2, 12, 20)
    torch.testing.assert_close(ours, theirs[..., :20], rtol=1e-5, atol=1e-5)


def test_relaxed_states_differentiate_and_the_mask_row_stays_fixed():
    torch.manual_seed(0)
    model = plugin.build(TINY)
    x, _ = _states(["ACDEFGHIKLMN"])
    x = (0.9 * x + 0.1 / 21).requires_grad_(True)  # a relaxed one-hot state
    model.denoiser(x, torch.ones(1), None).logsumexp(-1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grad = model.denoiser.network.embedder.embedder.weight.grad
    assert grad[evodiff_tokens()[1]].abs().sum() == 0 and grad[:20].abs().sum() > 0


def test_released_checkpoint_loads(tmp_path):
    path, network = _released_file(tmp_path / "oaar-tiny.tar")
    state = read_released_weights(path)
    assert set(state) == set(network.state_dict())
    x, _ = _states(["ACDEFGHIKLMN"])
    expected = plugin.build(TINY).denoiser  # random: must differ
    expected.network.load_state_dict(network.state_dict())
    for model in (plugin.build({**TINY, "weights": str(path)}), plugin.load(TINY, path)):
        with torch.no_grad():
            torch.testing.assert_close(model.denoiser(x, torch.ones(1)), expected(x, torch.ones(1)))
    # a loaded model passes the contract too
    check_model_contract(plugin, TINY, batch=2, model=plugin.load(TINY, path))


def test_missing_wrong_and_foreign_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="zenodo.org/record/8045076"):
        plugin.load(TINY)  # nothing downloaded by default
    with pytest.raises(FileNotFoundError, match="zenodo.org/record/8045076"):
        plugin.build({**TINY, "weights": str(tmp_path / "oaar-38M.tar")})
    path, _ = _released_file(tmp_path / "tiny.tar")
    with pytest.raises(ValueError, match="2 ByteNet layers of width 16.*check options.preset"):
        plugin.build({**TINY, "n_layers": 3, "weights": str(path)})
    (tmp_path / "text.tar").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        plugin.load(TINY, tmp_path / "text.tar")
    torch.save({"model_state_dict": {"x": "not a tensor"}}, tmp_path / "odd.tar")
    with pytest.raises(ValueError, match="no EvoDiff model weights"):
        read_released_weights(tmp_path / "odd.tar")
    with pytest.raises(ValueError, match="not both"):
        plugin.build({**TINY, "weights": str(path), "download": True})
    with pytest.raises(ValueError, match="preset must be one of"):
        plugin.build({**TINY, "preset": "oaar-1B"})
    with pytest.raises(ValueError, match="needed without a preset"):
        plugin.build({**TINY, "preset": None})
    with pytest.raises(ValueError, match="unknown evodiff model options"):
        plugin.build({**TINY, "width": 3})
    with pytest.raises(ValueError, match="does not pretrain|not pretrained"):
        plugin.pretrain(TINY, tmp_path / "x.pt", 0)


def test_download_needs_the_full_evodiff_install():
    try:
        import evodiff.pretrained  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="EvoDiff's own loader"):
            plugin.build({**TINY, "d_model": None, "n_layers": None, "kernel_size": None, "download": True})
    else:
        pytest.skip("evodiff imports fully here; downloading would need the internet")


def test_presets_match_evodiffs_config_files():
    files = {f.name: f for f in (metadata.files("evodiff") or []) if f.name.startswith("config")}
    assert {"config38M.json", "config640M.json"} <= set(files), "evodiff's config files are not installed"
    for preset, name in (("oaar-38M", "config38M.json"), ("oaar-640M", "config640M.json")):
        config = json.loads(files[name].read_text())
        assert {k: config[k] for k in ("d_embed", "d_model", "n_layers", "kernel_size", "r", "slim",
                                       "activation")} == PRESETS[preset]


def test_lora_trains_adapters_only(tmp_path):
    path, _ = _released_file(tmp_path / "tiny.tar")
    base = plugin.load(TINY, path)
    model = plugin.load({**TINY, "lora": {"rank": 2}}, path)
    x, _ = _states(["ACDEFGHIKLMN"])
    with torch.no_grad():  # LoRA starts as the identity
        torch.testing.assert_close(model.denoiser(x, torch.ones(1)), base.denoiser(x, torch.ones(1)))
    trainable = [n for n, p in model.denoiser.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 2 * TINY["n_layers"]  # A and B of two convolutions per block
    assert model.spec["options"]["lora"] == {"rank": 2}


def test_vard_campaign_through_the_command_line(tmp_path):
    """A short protein_family campaign on the tiny EvoDiff model with LoRA, from the `.tar`."""
    from vardbio.cli import main
    from vardbio.model.checkpoint import read_checkpoint

    path, _ = _released_file(tmp_path / "oaar-tiny.tar")
    out = tmp_path / "run"
    options = ["campaign.model.options.length=12", "campaign.model.options.sampling_steps=4",
               "+campaign.model.options.d_model=16", "+campaign.model.options.n_layers=2",
               "+campaign.model.options.kernel_size=3", "+campaign.model.options.lora={rank: 2}"]
    argv = ["run", "campaign=protein_family", "campaign.model.name=evodiff", *options, f"campaign.model.checkpoint={path}", f"out_dir={out}", "progress=false", "report=false",
            "campaign.iterations=2", "campaign.eval_samples=8", "campaign.oracle_budget=32",
            "algorithm.value_samples=16", "algorithm.batch_size=4", "algorithm.value.epochs=2",
            "algorithm.lr=1e-2"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["oracle_calls"] == 32 and np.isfinite(summary["reward_final"]["mean"])
    assert 0 <= summary["hit_fraction"] <= 1 and "naturalness" in summary
    assert (out / "designs_final.fasta").is_file()
    final = read_checkpoint(out / "model_final.pt")
    start = plugin.load({**TINY, "lora": {"rank": 2}}, path).denoiser.state_dict()
    moved = {k for k, v in final["state_dict"].items() if k.startswith("denoiser.")
             and not torch.equal(v, start[k[len("denoiser."):]])}
    assert moved and all("lora_" in k for k in moved)
    reloaded = plugin.load({"length": 12}, out / "model_final.pt")  # a vardbio checkpoint of this plugin
    assert reloaded.spec["options"] == {**PRESETS["oaar-38M"], "d_model": 16, "n_layers": 2, "kernel_size": 3,
                                        "lora": {"rank": 2}}
    assert len(reloaded.decode(reloaded.rollout(2).final)[0]) == 12


def test_a_missing_evodiff_install_is_named(monkeypatch):
    import importlib.util
    import sys

    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "vardbio_models._evodiff_network")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "evodiff" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps evodiff sequence-models fair-esm"):
        plugin.build(TINY)
