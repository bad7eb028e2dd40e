"""Shared test set-up: one intra-op thread (fastest for tiny models on 2 cores), the same
global random state for every test, and a count of real oracle calls."""
from collections import Counter

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same global random state: this torch build seeds its
    global generator randomly at start-up, so unseeded initial weights would differ per run."""
    torch.manual_seed(0)


@pytest.fixture
def real_oracle_calls(monkeypatch):
    """Counter of designs scored by real oracle calls in this process (oracle name -> count),
    over every Oracle class of the registered oracles; a call nested in another oracle's
    score counts once. A campaign that spends no oracle call outside its runtime has
    sum(counter.values()) == oracle_calls + eval_oracle_calls (in-process executor)."""
    from vardbio import registry
    from vardbio.reward.oracle import Oracle

    for name in registry.available("oracle"):
        try:
            registry.load("oracle", name)
        except (ImportError, ValueError):  # an optional extra that is not installed
            continue
    calls, depth = Counter(), [0]

    def counting(score):
        def wrapped(self, designs):
            depth[0] += 1
            try:
                result = score(self, designs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                calls[self.name] += len(designs)
            return result
        return wrapped

    seen, todo = set(), [Oracle]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
                if "score" in sub.__dict__:
                    monkeypatch.setattr(sub, "score", counting(sub.__dict__["score"]))
    return calls
