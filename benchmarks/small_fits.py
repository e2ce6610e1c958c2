"""Fits of 1,000 cells: the whole-graph steps' input noise, three ways, next to umap-learn.

    .venv/bin/python benchmarks/small_fits.py [pbmc68k_reduced digits paul15 pbmc4k kidney cbmc] [--splits 5]

Graphs of up to 5,000 cells train by whole-graph steps (every cell embedded in every
step; up to 1,000 cells when this script was written). The input noise that makes new
points land well perturbs the cells the edges read; this script compares, on a 1,000-cell
sample (seed 0) of each labelled set (all of a smaller set):

- "fresh, heads": every cell's noise drawn again at every step, the heads read from the
  perturbed pass, tails and negatives from a second, clean pass (the code before
  2026-12-04, ``ONE_PASS = False``, ``NOISE_REFRESH = 1``);
- "standing, heads": the same with an eighth of the cells' noise drawn again per step
  (``NOISE_REFRESH = 8``);
- "standing, every end": one pass of the perturbed cells for heads, tails and negatives,
  the noise scaled by 1/√2 (``ONE_PASS = True``, the default);
- umap-learn (``umap.UMAP``, same seeds).

Per set and variant: plain and DensMAP fit seconds (one fit each, the graph built by the
method), trustworthiness@15, kNN preservation@15, density correlation of the plain and the
DensMAP fit, and the mean kNN label-transfer accuracy of held-out cells over ``--splits``
seeded 70/30 splits (as benchmarks/quality.py). Then the means over the sets, and the
training time alone (``train_embedding``) of a plain fit of pbmc68k_reduced (its own graph),
best of 3, per variant.
"""

from __future__ import annotations

import argparse
import time
import warnings
from unittest import mock

import numpy as np
import scanpy as sc
import torch
import umap
from datasets import LABELLED
from quality import transfer

from scnumap import NUMAP
from scnumap.core import metrics, train
from scnumap.core import numap as numap_module

warnings.filterwarnings("ignore")

#: name: (ONE_PASS, NOISE_REFRESH)
VARIANTS = {
    "fresh, heads": (False, 1),
    "standing, heads": (False, 8),
    "standing, every end": (True, 8),
}
COLUMNS = ("fit_s", "dens_fit_s", "trust", "knn", "density", "dens_density", "transfer")


def numap_fit(X, seed, densmap):
    return NUMAP(random_state=seed, densmap=densmap, device="cpu", verbose=False).fit(X)


def umap_fit(X, seed, densmap):
    return umap.UMAP(random_state=seed, densmap=densmap).fit(X)


def sample(name: str, size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    ad = LABELLED[name]()
    X = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
    labels = ad.obs["label"].astype(str).to_numpy()
    if X.shape[0] > size:
        keep = np.sort(np.random.default_rng(0).choice(X.shape[0], size, replace=False))
        X, labels = X[keep], labels[keep]
    return X, labels


def measure(fit, X, labels, splits: int) -> dict:
    row = {}
    for densmap in (False, True):
        t0 = time.perf_counter()
        model = fit(X, 0, densmap)
        seconds = time.perf_counter() - t0
        E = model.embedding_
        if densmap:
            row.update(dens_fit_s=seconds, dens_density=metrics.density_correlation(X, E))
        else:
            row.update(
                fit_s=seconds,
                trust=metrics.trustworthiness(X, E),
                knn=metrics.knn_preservation(X, E),
                density=metrics.density_correlation(X, E),
            )
    row["transfer"] = transfer(lambda X, seed: fit(X, seed, False), X, labels, n_splits=splits)[0]
    return row


def with_variant(name: str):
    one_pass, refresh = VARIANTS[name]
    return mock.patch.multiple(train, ONE_PASS=one_pass, NOISE_REFRESH=refresh)


def training_seconds(name: str, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of ``train_embedding`` in a plain fit of pbmc68k_reduced."""
    ad = sc.datasets.pbmc68k_reduced()
    X = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
    spent = []
    original = numap_module.train_embedding

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        spent.append(time.perf_counter() - t0)
        return out

    with with_variant(name), mock.patch.object(numap_module, "train_embedding", timed):
        for _ in range(repeats):
            NUMAP(random_state=0, device="cpu", verbose=False).fit(X, graph=ad.obsp["connectivities"])
    return min(spent)


def print_row(set_name: str, method: str, row: dict) -> None:
    print(
        f"| {set_name} | {method} | {row['fit_s']:.1f} | {row['dens_fit_s']:.1f} | {row['trust']:.3f} "
        f"| {row['knn']:.3f} | {row['density']:.3f} | {row['dens_density']:.3f} | {row['transfer']:.3f} |",
        flush=True,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney", "cbmc"])
    parser.add_argument("--splits", type=int, default=5, help="seeded 70/30 splits of the transfer")
    args = parser.parse_args(argv)
    warm = np.random.default_rng(0).standard_normal((300, 20)).astype(np.float32)
    numap_fit(warm, 0, True)  # warm-up: the layout's numba code, torch's allocations
    umap_fit(warm, 0, True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; 1,000-cell samples (seed 0)\n")
    header = (
        "| set | method | fit s | DensMAP fit s | trust@15 | kNN pres@15 | density r | DensMAP density r "
        "| transfer acc |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rows: dict[str, list[dict]] = {}
    for set_name in args.names:
        X, labels = sample(set_name)
        for name in VARIANTS:
            with with_variant(name):
                row = measure(numap_fit, X, labels, args.splits)
            rows.setdefault(name, []).append(row)
            print_row(set_name, f"scnumap, {name}", row)
        row = measure(umap_fit, X, labels, args.splits)
        rows.setdefault("umap-learn", []).append(row)
        print_row(set_name, "umap-learn", row)
    print(f"\nMeans over {len(args.names)} sets:\n")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for method, group in rows.items():
        print_row("all", method, {c: float(np.mean([r[c] for r in group])) for c in COLUMNS})
    print("\nTraining alone (`train_embedding`), plain fit of pbmc68k_reduced (700 cells), best of 3:\n")
    print("| noise | training s |")
    print("|---|---|")
    for name in VARIANTS:
        print(f"| {name} | {training_seconds(name):.2f} |", flush=True)


if __name__ == "__main__":
    main()
