"""What each statistic of the mapping score says about a cell type the reference lacks.

    .venv/bin/python benchmarks/score_parts.py [pbmc4k kidney cbmc pbmc68k_reduced paul15]
        [--share-neighbors 30]

The leave-one-type-out splits of ``benchmarks/mapping.py`` part A (70/30 by cells, seed 0;
every type with at least 30 query cells left out of the reference in turn; reference PCA
and ``sc.pp.neighbors``, the query in the reference's PCA). The mapping score joins three
statistics of a query cell (docs/method.md, "Query mapping"): its mean distance to its
nearest reference cells (``dist``), that distance relative to those cells' own radii
(``ratio``) and its averaged query share (``share``), each a conformal p-value against the
reference's own cells. They are computed here as ``tl.project`` computes them on a plain
reference (``scnumap.core.mapping`` and ``scnumap.core.query_share``), without the network.

Prints, per left-out type, the AUROC of each statistic alone (left-out cells against the
rest of the query; below 0.5, the statistic points the wrong way), and per set the mean
AUROC of ways of joining them: Fisher's ``-Σ log p`` of all three (the score
``tl.project`` writes), of ``dist`` and ``share``, the least p-value of ``dist`` and
``share``, and ``share`` alone, each calibrated against the reference cells' own statistics
as the score is; with the share of known-type query cells each would call Unknown at the
default threshold (0.015).
"""

from __future__ import annotations

import argparse
import platform
import warnings

import numpy as np
import pandas as pd
import scanpy as sc
from mapping import labelled, reference_pca, split
from sklearn.metrics import roc_auc_score

from scnumap.core.mapping import DEFAULT_UNKNOWN_RATE, MappingCalibration, conformal_p, fisher
from scnumap.core.query_share import SHARE_NEIGHBORS, QueryShare
from scnumap.core.reference_index import ReferenceIndex

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0

STATISTICS = ("dist", "ratio", "share")

#: Ways of joining the statistics' p-values: (name, statistics, join); "score" is
#: ``MappingCalibration.score`` itself (Fisher's join of all three).
JOINS = (
    ("Fisher dist + ratio + share (the score)", (0, 1, 2), "score"),
    ("Fisher dist + share", (0, 2), "fisher"),
    ("least p of dist, share", (0, 2), "min"),
    ("share alone", (2,), "fisher"),
)


def joined(p_values: list[np.ndarray], parts: tuple[int, ...], how: str) -> np.ndarray:
    """A statistic that grows as the cell looks less typical."""
    chosen = [p_values[j] for j in parts]
    return fisher(chosen) if how == "fisher" else -np.min(chosen, axis=0)


def left_out_type(ref_all, query, left_out: str, share_neighbors: int) -> dict:
    ref = ref_all[ref_all.obs["label"].astype(str) != left_out].copy()
    sc.pp.pca(ref, n_comps=min(50, ref.n_vars - 1, ref.n_obs - 1), random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    Z = reference_pca(ref, query).astype(np.float32)
    novel = query.obs["label"].astype(str).to_numpy() == left_out
    calibration = MappingCalibration.from_distances(ref.obsp["distances"])
    index = ReferenceIndex(np.asarray(ref.obsm["X_pca"], dtype=np.float32))
    distances, indices = index.query(Z, calibration.n_neighbors)
    statistics = calibration.statistics(distances, indices)
    pool = QueryShare(index, Z, n_neighbors=share_neighbors)
    shares = pool.sample_shares - pool.shift(pool.sample_shares)
    null, rows = calibration.null(), pool.null_rows
    query_p = [conformal_p(statistics[:, j], null[:, j]) for j in range(2)] + [conformal_p(shares, pool.null)]
    null_p = [conformal_p(null[rows, j], null[:, j], own=True) for j in range(2)]
    null_p.append(conformal_p(pool.null, pool.null, own=True))
    out = {"left out": left_out, "cells": int(novel.sum())}
    for j, name in enumerate(STATISTICS):
        raw = statistics[:, j] if j < 2 else shares
        out[name] = roc_auc_score(novel, raw)
    for name, parts, how in JOINS:
        if how == "score":
            score = calibration.score(statistics, shares, pool.null, rows)
        else:
            score = conformal_p(joined(query_p, parts, how), joined(null_p, parts, how))
        out[name] = roc_auc_score(novel, 1.0 - score)
        out[name + " false Unknown"] = float(np.mean(score[~novel] < DEFAULT_UNKNOWN_RATE))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sets", nargs="*", default=["pbmc4k", "kidney", "cbmc", "pbmc68k_reduced", "paul15"])
    parser.add_argument("--share-neighbors", type=int, default=SHARE_NEIGHBORS, help="pooled neighbours of the share")
    args = parser.parse_args()
    print(f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC, {platform.node()}, sets {' '.join(args.sets)}")
    print(f"pooled neighbours of the query share: {args.share_neighbors}\n")
    rows = []
    print("| set | left out | left-out query cells | AUROC dist | AUROC ratio | AUROC share |")
    print("|---|---|---|---|---|---|", flush=True)
    for name in args.sets:
        ref_all, query = split(labelled(name), seed=0)
        counts = query.obs["label"].astype(str).value_counts()
        for left_out in [t for t, n in counts.items() if n >= 30]:
            r = left_out_type(ref_all, query, left_out, args.share_neighbors)
            r["set"] = name
            rows.append(r)
            print(
                f"| {name} | {left_out} | {r['cells']} | {r['dist']:.3f} | {r['ratio']:.3f} | {r['share']:.3f} |",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    print("\nMean AUROC of the joined score (largest false-Unknown share among known-type cells):\n")
    print("| set | types | " + " | ".join(name for name, _, _ in JOINS) + " |")
    print("|---|---|" + "---|" * len(JOINS))
    groups = [(name, frame[frame["set"] == name]) for name in dict.fromkeys(frame["set"])]
    for name, g in [*groups, ("**all left-out types**", frame)]:
        cells = [f"{g[j].mean():.3f} ({g[j + ' false Unknown'].max():.3f})" for j, _, _ in JOINS]
        print(f"| {name} | {len(g)} | " + " | ".join(cells) + " |")
    wrong = frame[["dist", "ratio"]].lt(0.5).sum()
    print(f"\nTypes a statistic alone ranks the wrong way (AUROC < 0.5): dist {wrong['dist']}, ratio {wrong['ratio']}")


if __name__ == "__main__":
    main()
