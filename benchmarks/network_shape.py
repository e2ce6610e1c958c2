"""The embedding network's shape: quality against fit time, next to umap-learn.

    .venv/bin/python benchmarks/network_shape.py [pbmc68k_reduced digits paul15 pbmc4k ...]
        [--hidden 128,128 80,80,80,80 96,96,96,96] [--spectral 0 10 40] [--repeats 2] [--seeds 1] [--densmap]

``NUMAP(hidden=...)`` sets the widths of the MLP on top of GrEASE (default ``(128, 128)``),
``NUMAP(n_spectral_components=...)`` the number of GrEASE coordinates it reads besides the
input (default 10; ``0`` asks for ``None``, one per 100 cells, 10 to 40); ``--spectral`` gives
one or more, each combined with every ``--hidden``.
Per set and shape: the fastest of ``--repeats`` plain fits (seed 0) on the whole set, its
trustworthiness@15, kNN preservation@15 and centroid ρ (Spearman correlation of the
distances between cell-type centroids in the input and in the map: the global arrangement),
each the mean over ``--seeds`` whole-set fits (seeds 0, 1, ...; the centroid ρ of each seed
shown too, as one fit's scatters widely), and the mean kNN label-transfer accuracy of
held-out cells over three seeded 70/30 splits (as benchmarks/quality.py); umap-learn's row
(same measures, its fastest of ``--repeats`` fits) is the reference. ``--densmap``: the fits
with DensMAP next to umap-learn's densMAP, and the density correlation in place of the
transfer (measured on plain fits, as benchmarks/quality.py does). Run on an idle machine:
the fit times of one host scatter by ±20 %, hence the repeats.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
import warnings

import numpy as np
from datasets import LABELLED
from quality import fit_numap, fit_umap, transfer
from scaling import fastest, spectral_params, warm_up

from scnumap.core import metrics

warnings.filterwarnings("ignore")

SETS = ["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney", "cbmc"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=SETS, help=f"sets among {sorted(LABELLED)}")
    parser.add_argument("--hidden", nargs="+", default=["128,128", "80,80,80,80", "96,96,96,96"])
    parser.add_argument(
        "--spectral",
        nargs="+",
        type=int,
        default=[10],
        help="n_spectral_components values (0: the automatic count, None)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="fits timed per shape (the fastest counts)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="whole-set fits (seeds 0, 1, ...) averaged for trust, kNN and centroid ρ"
    )
    parser.add_argument("--densmap", action="store_true", help="DensMAP fits, density correlation, no transfer")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(LABELLED))
    if unknown:
        parser.error(f"unknown sets {unknown}; choose among {sorted(LABELLED)}")
    import torch

    print(
        f"benchmarks/network_shape.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}: "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    warm_up(peers=True)
    shapes = [tuple(int(w) for w in h.split(",")) for h in args.hidden]
    for name in args.names:
        ad = LABELLED[name]()
        X = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
        labels = ad.obs["label"].astype(str).to_numpy()
        print(f"\n### {name}: {X.shape[0]} cells × {X.shape[1]} dims\n")
        last = "density r" if args.densmap else "transfer acc"
        print(
            f"| method | hidden | spectral | fit s | ÷ umap-learn | trust@15 | kNN pres@15 | centroid ρ "
            f"| centroid ρ per seed | {last} |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        peer = "umap-learn densMAP" if args.densmap else "umap-learn UMAP"
        fits = [(peer, "–", "–", lambda X, seed: fit_umap(X, seed, args.densmap))]
        method = "scnumap NUMAP+DensMAP" if args.densmap else "scnumap NUMAP"
        fits += [
            (
                method,
                str(s),
                str(k) if k else "auto",
                functools.partial(fit_numap, densmap=args.densmap, hidden=s, **spectral_params(k)),
            )
            for s in shapes
            for k in args.spectral
        ]
        reference = None
        for method, shape, spectral, fit in fits:
            watch, model = fastest(args.repeats, lambda X, fit=fit: fit(X, 0), X)
            seconds = watch.seconds
            reference = reference or seconds
            E = model.embedding_
            if args.densmap:
                value = metrics.density_correlation(X, E)
            else:
                value, _ = transfer(fit, X, labels)
            maps = [E] + [fit(X, seed).embedding_ for seed in range(1, args.seeds)]
            trust = np.mean([metrics.trustworthiness(X, Y) for Y in maps])
            kept = np.mean([metrics.knn_preservation(X, Y) for Y in maps])
            centroid = [metrics.centroid_distance_spearman(X, Y, labels) for Y in maps]
            print(
                f"| {method} | {shape} | {spectral} | {seconds:.1f} | {seconds / reference:.2f}× "
                f"| {trust:.3f} | {kept:.3f} | {np.mean(centroid):.3f} | {', '.join(f'{c:.3f}' for c in centroid)} "
                f"| {value:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
