"""Train the small digit classifier behind the `digit_probability` oracle.

    .venv/bin/python scripts/train_digit_classifier.py  [--out oracles/weights/digits_mlp.npz]

Data: scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0-16, scaled to
[0, 1]); a seeded 80/20 split. Model: a 64-64-10 MLP (tanh), full-batch Adam with weight decay,
seeded, ~10 s on one CPU core. The weights are saved as plain numpy arrays (no pickle) with
the held-out accuracy and this command, so the oracle needs only numpy at run time.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "oracles" / "weights" / "digits_mlp.npz"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=600)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=args.seed,
                                              stratify=y)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(args.epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    w1, b1, w2, b2 = (p.detach().numpy().astype(np.float32) for p in net.parameters())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, w1=w1, b1=b1, w2=w2, b2=b2, test_accuracy=np.float32(acc),
                        command=np.array("python scripts/train_digit_classifier.py "
                                         f"--seed {args.seed} --epochs {args.epochs}"))
    print(f"held-out accuracy {acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
