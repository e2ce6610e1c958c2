"""The query share's sample search: exact or approximate, by query size.

    .venv/bin/python benchmarks/share_search.py [--sizes 60000 80000 100000 200000] [--repeats 2]

The mapping score's query share searches every query cell among a sample of up to 20,000
query cells (``scnumap.core.query_share``). Exact (scikit-learn) costs grow with query ×
sample pairs; pynndescent's costs a fixed few seconds per projection (the sample's index is
built, and its search compiled by numba, anew in every call) and less per cell. For each
query size, ``tl.project(obs='label')`` of synthetic query cells (rows of pair (c)'s
normalised query in ``integration.py``, resampled with replacement, non-zeros × exp(N(0,
0.1²))) onto pair (c)'s corrected reference (a short NUMAP fit: the projection's cost does
not depend on how long the network trained), with the sample searched exactly and
approximately (``SAMPLE_EXACT_MAX_PAIRS`` set above or below the size), seconds of each
warm call, the share called Unknown, the mean mapping score and the share of labels that
agree between the two. The reference's own search is exact in both (2,989 cells).
"""

from __future__ import annotations

import argparse
import time
import warnings

import integration
import numpy as np

import scnumap
from scnumap.core import query_share

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 80_000, 100_000, 200_000])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    ref, query, _ = integration.pbmc4k_batches(0.5, 0.3, 0.5, 0.3)
    integration.prepare(ref, 50)
    scnumap.tl.numap(ref, batch_key="batch", random_state=0, verbose=False, **integration.QUICK_FIT)
    scnumap.tl.project(query[:100, ref.var_names].copy(), ref, obs="label")  # the reference's index
    integration.warm_up_search()
    default = query_share.SAMPLE_EXACT_MAX_PAIRS
    print(f"`SAMPLE_EXACT_MAX_PAIRS` = {default:,} (query × sample pairs searched exactly)\n")
    print("| query cells | sample search | s per call | Unknown share | mean score | labels agree |")
    print("|---|---|---|---|---|---|", flush=True)
    for n in args.sizes:
        big = integration.synthetic_query(query[:, ref.var_names], n)
        labels = {}
        for how, limit in (("exact", 10**18), ("approximate", 0)):
            query_share.SAMPLE_EXACT_MAX_PAIRS = limit
            seconds = []
            for _ in range(args.repeats):
                out = big.copy()
                t0 = time.perf_counter()
                scnumap.tl.project(out, ref, obs="label")
                seconds.append(time.perf_counter() - t0)
            labels[how] = out.obs["label_numap"].astype(str).to_numpy()
            agree = f"{np.mean(labels[how] == labels['exact']):.4f}" if how != "exact" else "–"
            print(
                f"| {n:,} | {how} | {', '.join(f'{s:.1f}' for s in seconds)} "
                f"| {np.mean(labels[how] == 'Unknown'):.4f} | {out.obs['numap_mapping_score'].mean():.4f} | {agree} |",
                flush=True,
            )
        query_share.SAMPLE_EXACT_MAX_PAIRS = default


if __name__ == "__main__":
    main()
