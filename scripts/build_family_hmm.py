"""Build the HG003687_ABC profile HMM of the protein_family campaign from the training proteome.

The largest family of paralogues among the protein_sequence model's training crops
(data/proteins/hg003687_crops.fasta, split=train) becomes a profile:

1. all-against-all phmmer of the training crops; two crops are linked when either finds the
   other with E-value < LINK_EVALUE (database size: the crops);
2. the largest connected group of linked crops is the family; the members with the most
   links are the candidate seeds;
3. jackhmmer from each candidate over the training crops, iterated until it converges (at
   most MAX_ITERATIONS rounds, HMMER's default inclusion threshold); the profile that
   includes the most crops (ties: the earlier seed) is written as HMMER3 text. A profile is
   as long as its seed crop, so the seed decides which stretch of the family it covers; on
   today's crops two seeds tie on links and their profiles include 65 and 66 crops.

On the crops shipped today the family is the ATP-binding domain of ABC transporters (the
consensus runs from the Q-loop through the LSGGQ signature, the Walker B "DE" and the
H-loop); the script prints the consensus and motif counts so that a rebuild can be checked.
Held-out crops never enter the profile. Deterministic (HMMER's builder has a fixed seed);
about a minute on one core. Needs pyhmmer:

    .venv/bin/python scripts/build_family_hmm.py            # writes data/hmm/HG003687_ABC.hmm
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pyhmmer
from pyhmmer.easel import DigitalSequenceBlock, TextSequence

from vardbio_models.protein_sequence import read_crops
from vardbio_oracles.hmm import sequence_block, sequence_index

LINK_EVALUE = 1e-5
MAX_ITERATIONS = 10
NAME = "HG003687_ABC"
DESCRIPTION = "ABC transporter ATP-binding domain, built by jackhmmer from the HG003687 training crops"
OUT = Path(__file__).resolve().parents[1] / "data" / "hmm" / f"{NAME}.hmm"


def linked_groups(block: DigitalSequenceBlock) -> tuple[list[list[int]], dict[int, set[int]]]:
    """Connected groups of crops linked by phmmer hits (E < LINK_EVALUE), largest first, and
    each crop's links."""
    links: dict[int, set[int]] = {i: set() for i in range(len(block))}
    for hits in pyhmmer.hmmer.phmmer(block, block, cpus=1, E=LINK_EVALUE):
        query = sequence_index(hits.query)
        for hit in hits:
            target = sequence_index(hit)
            if hit.evalue < LINK_EVALUE and target != query:
                links[query].add(target)
                links[target].add(query)
    seen: set[int] = set()
    groups = []
    for start in range(len(block)):
        if start in seen or not links[start]:
            continue
        stack, group = [start], []
        seen.add(start)
        while stack:
            node = stack.pop()
            group.append(node)
            for other in links[node] - seen:
                seen.add(other)
                stack.append(other)
        groups.append(sorted(group))
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups, links


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    train = read_crops()["train"]
    block = sequence_block(train)
    groups, links = linked_groups(block)
    family = groups[0]
    most_links = max(len(links[i]) for i in family)
    seeds = [i for i in family if len(links[i]) == most_links]
    print(f"{len(train)} training crops; largest linked groups: {[len(g) for g in groups[:8]]}; "
          f"candidate seeds {seeds} ({most_links} links each)")
    results, included = {}, {}
    for seed in seeds:
        query = TextSequence(name=b"seed", sequence=train[seed]).digitize(block.alphabet)
        results[seed] = next(iter(pyhmmer.hmmer.jackhmmer([query], block, max_iterations=MAX_ITERATIONS, cpus=1)))
        included[seed] = [sequence_index(h) for h in results[seed].hits if h.included]
        print(f"  seed crop {seed}: {results[seed].iteration} rounds (converged: {results[seed].converged}), "
              f"{len(included[seed])} crops included")
    seed = max(seeds, key=lambda i: (len(included[i]), -i))
    result = results[seed]
    members = [train[i] for i in included[seed]]
    hmm = result.hmm
    hmm.name = NAME.encode() if isinstance(hmm.name, bytes) else NAME
    hmm.description = DESCRIPTION.encode() if isinstance(hmm.description, bytes) else DESCRIPTION
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as fh:
        hmm.write(fh)

    signature = sum(bool(re.search(r"[LIVM]SGG[QE]", s)) for s in members)
    walker_a = sum(bool(re.search(r"G..G.GK[ST]", s)) for s in members)
    print(f"profile of seed crop {seed}: {len(members)} crops included, {hmm.M} match states")
    print(f"included crops with the ABC signature [LIVM]SGG[QE]: {signature}; with Walker A G..G.GK[ST]: {walker_a}")
    print(f"consensus: {hmm.consensus}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
