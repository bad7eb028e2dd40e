"""Can a molecule value network tell, from a clean final sample, whether it decodes to a
valid molecule? Fits each network on the validity label (1 valid, 0 not) of the final
states of shipped-model samples and prints training and held-out R² as it goes.

    python scripts/probe_molecule_value.py [--samples 512] [--epochs 200] [--checkpoint P]

If a network cannot predict validity at t = 0, where the state is the design, a value head
cannot learn a reward in which validity matters from those samples either.
"""
from __future__ import annotations

import argparse

import torch

from vardbio_models.molecule import DecodeFailure, MoleculeSetValueNet, MoleculeValueNet, plugin


def validity_data(samples: int, checkpoint: str | None, seed: int):
    """Final states (n, max_atoms, F), masks (n, max_atoms) and labels (n,) of fresh samples."""
    model = plugin.load({"repair_hydrogens": True}, checkpoint).eval()
    width = int(model.spec["options"]["max_atoms"])
    generator = torch.Generator().manual_seed(seed)
    states, masks, labels = [], [], []
    with torch.no_grad():
        for start in range(0, samples, 256):
            traj = model.rollout(min(256, samples - start), generator)
            designs = model.decode(traj.final, traj.mask)
            labels += [0.0 if isinstance(d, DecodeFailure) else 1.0 for d in designs]
            pad = width - traj.final.shape[1]
            states.append(torch.nn.functional.pad(traj.final, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(traj.mask, (0, pad)))
    return torch.cat(states), torch.cat(masks), torch.tensor(labels)


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(1 - (pred - target).pow(2).mean() / target.var())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x, mask, y = validity_data(args.samples, args.checkpoint, args.seed)
    n_train = int(0.8 * len(y))
    train, test = slice(0, n_train), slice(n_train, len(y))
    target = (y - y[train].mean()) / y[train].std()
    t = torch.zeros(len(y))
    print(f"{len(y)} samples, {y.mean():.1%} valid; {n_train} for training, the rest held out")
    for name, net in (("set", MoleculeSetValueNet(64, 2)), ("egnn", MoleculeValueNet(64, 3))):
        optimiser = torch.optim.Adam(net.parameters(), 2e-3)
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
