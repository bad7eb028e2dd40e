"""The diffusers adapter: tiny randomly initialised diffusers UNets (nothing downloaded) pass
the model contract, take the same steps as diffusers' own DDIM scheduler, and train LoRA only."""
import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

from vardbio.processes.gaussian import GaussianProcessConfig  # noqa: E402
from vardbio.testing import check_model_contract  # noqa: E402
from vardbio_models.diffusers_adapter import from_diffusers, plugin  # noqa: E402

TINY = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
        "block_out_channels": [8, 16], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 4, "attention_head_dim": 4}
TINY_COND = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
             "block_out_channels": [8, 16], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 8,
             "norm_num_groups": 4, "attention_head_dim": 4}
SCHED = {"num_train_timesteps": 100, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def _options(**extra):
    return {"unet_config": TINY, "scheduler": SCHED, "sampling_steps": 4, **extra}


def test_unet2d_with_lora_passes_the_model_contract():
    torch.manual_seed(0)
    model = check_model_contract(plugin, _options(lora={"rank": 2}))
    trainable = [n for n, p in model.denoiser.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_conditional_unet_with_v_prediction_passes_the_model_contract():
    torch.manual_seed(0)
    check_model_contract(plugin, {"unet_class": "UNet2DConditionModel", "unet_config": TINY_COND,
                                  "scheduler": {"num_train_timesteps": 100, "prediction_type": "v_prediction"},
                                  "sampling_steps": 3, "condition_shape": [3, 8]})


@pytest.mark.slow
def test_unet2d_full_finetuning_passes_the_model_contract():
    check_model_contract(plugin, _options())


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_steps_match_diffusers_ddim_scheduler(prediction):
    """Mean and σ of a vardbio step equal diffusers' DDIMScheduler.step (zero noise) on the
    same pair of timesteps, for every prediction type."""
    torch.manual_seed(1)
    unet = diffusers.UNet2DModel(**TINY).eval()
    with torch.no_grad():  # the last conv starts at zero in some versions: make outputs non-trivial
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sched = diffusers.DDIMScheduler(**SCHED, prediction_type=prediction, clip_sample=False)
    eta = 0.7
    model = from_diffusers(unet, sched, sampling_steps=99, eta=eta)  # grid 99, 98, ..., 0
    sched.set_timesteps(100)
    x = torch.randn(2, 1, 8, 8)
    for k in (0, 40, 97):
        t = model.process.times[k]
        with torch.no_grad():
            ours = model.step(x, k)
            out = unet(x, torch.full((2,), t)).sample
            ref = sched.step(out, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
        assert model.process.times[k + 1] == t - 1
        torch.testing.assert_close(ours.mean, ref, atol=2e-4, rtol=1e-3)
        a_t, a_s = sched.alphas_cumprod[t], sched.alphas_cumprod[t - 1]
        var = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        assert ours.std == pytest.approx(eta * float(var) ** 0.5, rel=1e-4)


def test_scheduler_betas_reach_the_process():
    model = plugin.build(_options())
    sched = diffusers.DDIMScheduler(**SCHED)
    torch.testing.assert_close(model.process.alpha_bar, sched.alphas_cumprod.double(), atol=1e-6, rtol=1e-5)


def test_vard_step_trains_only_lora_and_moves_the_step():
    """One VARD-style update (value of the next state plus KL) changes only LoRA weights."""
    torch.manual_seed(0)
    model = plugin.build(_options(lora={"rank": 2}))
    ref = model.frozen_copy()
    before = {n: p.detach().clone() for n, p in model.denoiser.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(4, 1, 8, 8)
    for _ in range(3):
        dist = model.step(x, 1)
        loss = (-dist.rsample().mean(dim=(1, 2, 3)) + 0.1 * dist.kl(ref.step(x, 1))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in model.denoiser.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    with torch.no_grad():
        assert float(model.step(x, 1).kl(ref.step(x, 1)).mean()) > 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="eta must be > 0"):
        from_diffusers(diffusers.UNet2DModel(**TINY), SCHED, eta=0.0)
    with pytest.raises(ValueError, match="unknown diffusers model options"):
        plugin.build(_options(colour="red"))
    with pytest.raises(ValueError, match="unet_config .* or pretrained"):
        plugin.build({"scheduler": SCHED})
    with pytest.raises(ValueError, match="needs condition_shape"):
        plugin.build({"unet_class": "UNet2DConditionModel", "unet_config": TINY_COND, "scheduler": SCHED})
    with pytest.raises(ValueError, match="none of the LoRA target modules"):
        plugin.build(_options(lora={"rank": 2, "target_modules": ["no_such_layer"]}))
    with pytest.raises(ValueError, match="unknown DDIM scheduler settings"):
        plugin.build(_options(scheduler={"num_train_timesteps": 100, "beta_shape": "odd"}))
    with pytest.raises(ValueError, match="ships no weights"):
        plugin.load(_options())
    with pytest.raises(ValueError, match="betas has 3 entries"):
        GaussianProcessConfig(num_train_steps=10, betas=[0.1, 0.2, 0.3])


def test_a_saved_pretrained_unet_directory_loads_without_download(tmp_path):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY)
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDIMScheduler(**SCHED).save_pretrained(tmp_path / "scheduler")
    model = plugin.load({"pretrained": str(tmp_path / "unet"), "scheduler": str(tmp_path / "scheduler"),
                         "sampling_steps": 4})
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = unet(x, torch.full((2,), 99)).sample
        got = model.denoiser(x, torch.ones(2))
    torch.testing.assert_close(got, expected)
    designs = model.decode(model.rollout(3).final)
    assert len(designs) == 3 and designs[0].shape == (8, 8) and np.abs(designs[0]).max() <= 1


def test_vard_campaign_fine_tunes_a_diffusers_unet_with_lora(tmp_path):
    """The campaign loop runs unchanged on the adapter: LoRA weights move, the base does not."""
    from vardbio.campaign.runner import run_campaign
    from vardbio.cli import compose_config
    from vardbio.model.checkpoint import read_checkpoint, save_model

    torch.manual_seed(0)
    options = _options(lora={"rank": 2})
    start = save_model(plugin.build(options), tmp_path / "start.pt")
    cfg = compose_config("config", ["campaign=image_compressibility", f"out_dir={tmp_path / 'run'}",
                                    "progress=false", "campaign.iterations=2", "campaign.eval_samples=8",
                                    "campaign.oracle_budget=16", "algorithm.value_samples=16",
                                    "algorithm.batch_size=4", "algorithm.value.epochs=2",
                                    "algorithm.lr=1e-2"])
    cfg.campaign.model.name = "diffusers"
    cfg.campaign.model.options = options
    cfg.campaign.model.checkpoint = str(start)
    summary = run_campaign(cfg)
    assert summary["oracle_calls"] == 16 and np.isfinite(summary["reward_final"]["mean"])
    assert (tmp_path / "run" / "designs_final.png").is_file()
    before = read_checkpoint(start)["state_dict"]
    after = read_checkpoint(tmp_path / "run" / "model_final.pt")["state_dict"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("lora_" in k for k in moved)
