"""Can a molecule value network tell, from a clean final sample, whether it decodes to a
valid molecule (--target validity), or what the QED of a valid one is (--target qed)? Fits
each network on the label of the final states of shipped-model samples (for QED, the valid
ones only) and prints training and held-out R² as it goes.

    python scripts/probe_molecule_value.py [--target validity] [--samples 512] [--epochs 200]
        [--kinds new denoiser] [--lr 2e-3]

--kinds picks the value networks the molecule plugin builds: 'new' (a fresh bonded trunk,
hidden 64, 3 layers) and 'denoiser' (a copy of the pretrained denoiser's trunk).

If a network cannot predict the label at t = 0, where the state is the design, a value head
cannot learn a reward that depends on it from those samples either.
"""
from __future__ import annotations

import argparse

import torch
from rdkit.Chem import QED

from vardbio_models.molecule import DecodeFailure, plugin


def labelled_samples(samples: int, checkpoint: str | None, seed: int, target: str):
    """The model, final states (n, D), node masks (n, max_atoms) and labels (n,) of fresh
    samples: validity (1 or 0) of every sample, or QED of the valid ones."""
    model = plugin.load({}, checkpoint).eval()
    generator = torch.Generator().manual_seed(seed)
    states, masks, labels = [], [], []
    with torch.no_grad():
        for start in range(0, samples, 256):
            traj = model.rollout(min(256, samples - start), generator)
            designs = model.decode(traj.final, traj.mask)
            valid = torch.tensor([not isinstance(d, DecodeFailure) for d in designs])
            if target == "validity":
                keep = torch.ones_like(valid)
                labels += valid.float().tolist()
            else:
                keep = valid
                labels += [QED.qed(d) for d, k in zip(designs, keep) if k]
            states.append(traj.final[keep])
            masks.append(traj.mask[keep])
    return model, torch.cat(states), torch.cat(masks), torch.tensor(labels)


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(1 - (pred - target).pow(2).mean() / target.var())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=("validity", "qed"), default="validity")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=["new"], choices=("new", "denoiser"))
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model, x, mask, y = labelled_samples(args.samples, args.checkpoint, args.seed, args.target)
    n_train = int(0.8 * len(y))
    train, test = slice(0, n_train), slice(n_train, len(y))
    target = (y - y[train].mean()) / y[train].std()
    t = torch.zeros(len(y))
    label = f"{y.mean():.1%} valid" if args.target == "validity" else f"valid ones, mean QED {y.mean():.3f}"
    print(f"{len(y)} samples ({label}); {n_train} for training, the rest held out")
    for name in args.kinds:
        torch.manual_seed(args.seed)
        net = plugin.value_head(model, {"kind": name}).network.requires_grad_(True)
        optimiser = torch.optim.Adam(net.parameters(), args.lr)
        for epoch in range(args.epochs):
            for idx in torch.randperm(n_train).split(64):
                loss = (net(x[idx], t[idx], mask[idx]) - target[idx]).pow(2).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            if (epoch + 1) % 40 == 0:
                with torch.no_grad():
                    fit = r2(net(x[train], t[train], mask[train]), target[train])
                    held = r2(net(x[test], t[test], mask[test]), target[test])
                print(f"{name} epoch {epoch + 1}: training R² {fit:.3f}, held-out R² {held:.3f}", flush=True)


if __name__ == "__main__":
    main()
