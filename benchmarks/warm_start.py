"""A fit's warm start (`NUMAP(warm_start=True)`, the default) against a fit without it.

    .venv/bin/python benchmarks/warm_start.py [pbmc68k_reduced digits paul15 pbmc4k ...] [--fractions 0.5 0.7]

On sets small enough for the warm start (up to 5,000 cells, ``WARM_START_MAX``; larger
sets whose 70 % training splits are that small: only the transfer row changes; whole-graph
steps up to 1,000 cells, grouped steps above), one markdown table per set:
for NUMAP and NUMAP+DensMAP, with and without the warm start, the UMAP steps trained, fit
time, trustworthiness@15, kNN preservation@15, density correlation and, for the plain fits,
the mean kNN (k=15) label-transfer accuracy of held-out cells over three seeded 70/30
splits (as benchmarks/quality.py). The warm start's own time (layout and distillation) is
timed apart on the plain fit. ``--fractions``: the warm-started fits' share of the automatic
UMAP phase (``scnumap.core.warm_start.UMAP_FRACTION``), one row each.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from datasets import LABELLED
from quality import load, transfer
from scaling import warm_up

from scnumap import NUMAP
from scnumap.core import metrics
from scnumap.core import numap as numap_module

warnings.filterwarnings("ignore")


def fit(X, seed, densmap, warm):
    return NUMAP(random_state=seed, densmap=densmap, warm_start=warm, device="cpu", verbose=False).fit(X)


def timed_warm_start(X) -> float:
    """Seconds of the warm start itself (layout and distillation) in a plain fit of ``X``."""
    spent = []
    original = NUMAP._warm_start

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        original(self, *args, **kwargs)
        spent.append(time.perf_counter() - t0)

    NUMAP._warm_start = timed
    try:
        fit(X, 0, False, True)
    finally:
        NUMAP._warm_start = original
    return spent[0]


def run(name: str, fractions) -> None:
    X, labels = load(name)
    if int(0.7 * X.shape[0]) > numap_module.WARM_START_MAX:
        print(f"{X.shape[0]} cells, its 70 % too: no warm start", flush=True)
        return
    warm_full = X.shape[0] <= numap_module.WARM_START_MAX  # else only the held-out transfer (70 % fits) changes
    fit(X[:200], 1, True, True)  # warm-up: the layout's numba code, torch's allocations
    print("| method | warm start | UMAP steps | fit s | trust@15 | kNN pres@15 | density r | transfer acc |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for densmap in (False, True) if warm_full else (False,):
        for warm, fraction in [(True, f) for f in fractions] + [(False, None)]:
            if warm:
                numap_module.UMAP_FRACTION = fraction
            t0 = time.perf_counter()
            model = fit(X, 0, densmap, warm)
            fit_s = time.perf_counter() - t0
            E = model.embedding_
            umap_steps = round(model.n_steps_ * (1 - model._density_share(warm=model._warm(X.shape[0]))))
            acc = "–"
            if not densmap:
                acc = f"{transfer(lambda X, seed, warm=warm: fit(X, seed, False, warm), X, labels)[0]:.3f}"
            print(
                f"| NUMAP{'+DensMAP' if densmap else ''} | {'yes' if warm else 'no'} | {umap_steps} | {fit_s:.1f} "
                f"| {metrics.trustworthiness(X, E):.3f} | {metrics.knn_preservation(X, E):.3f} "
                f"| {metrics.density_correlation(X, E):.3f} | {acc} |",
                flush=True,
            )
    if not warm_full:
        print(f"\n{X.shape[0]} cells: the full fit starts cold, the 70 % fits warm")
        return
    print(f"\nThe warm start itself (layout + distillation), plain fit: {timed_warm_start(X):.2f} s", flush=True)


def main(argv=None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney"])
    parser.add_argument("--fractions", type=float, nargs="+", default=[numap_module.UMAP_FRACTION])
    args = parser.parse_args(argv)
    first = np.asarray(LABELLED[args.names[0]]().obsm["X_pca"], dtype=np.float32) if args.names else None
    if first is not None and first.shape[0] <= numap_module.WARM_START_MAX:
        # before anything else: the process's first warm start compiles umap-learn's layout
        print(
            f"First warm start of the process ({args.names[0]}, umap-learn's layout compiled by numba): "
            f"{timed_warm_start(first):.2f} s; the second: {timed_warm_start(first):.2f} s",
            flush=True,
        )
    warm_up(False)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.names:
        run(name, args.fractions)
    numap_module.UMAP_FRACTION = args.fractions[0]


if __name__ == "__main__":
    main()
