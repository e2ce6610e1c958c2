"""GrEASE's budget in a warm-started fit: 100 steps at 6e-3 against 300 at 3e-3, next to umap-learn.

    .venv/bin/python benchmarks/grease_budget.py [pbmc68k_reduced digits ...] [--sizes 1000 5000] [--splits 3]

A fit of up to 5,000 cells starts warm: umap-learn's layout optimiser moves free coordinates
from GrEASE's, the network learns that layout, and the UMAP steps follow; GrEASE's
coordinates are the layout's start and the network's input features. This script compares,
on samples (seed 0) of ``--sizes`` cells of each labelled set (all of a smaller set; a
size is skipped where the set is no larger than the previous size):

- "300 steps, 3e-3": GrEASE at its budget and learning rate before 2026-12-05
  (``WARM_GREASE_STEPS = None``, exact solver's learning rate 3e-3);
- "100 steps, 6e-3": the defaults (``scnumap.core.numap.WARM_GREASE_STEPS``,
  ``scnumap.core.grease.DEFAULT_LR``);
- umap-learn (``umap.UMAP``, same seeds).

Per sample and variant: plain and DensMAP fit seconds (one fit each, the graph built by the
method), GrEASE's share of the plain fit, trustworthiness@15, kNN preservation@15, the
density correlation of the plain and the DensMAP fit, and the mean kNN label-transfer
accuracy of held-out cells over ``--splits`` seeded 70/30 splits (as benchmarks/quality.py);
then the means per size. The numba code of both kNN paths (exact below 8,192 cells,
pynndescent above) is compiled before anything is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from unittest import mock

import numpy as np
import torch
from fit_profile import phases
from scaling import warm_up
from small_fits import COLUMNS, measure, numap_fit, sample, umap_fit

from scnumap.core import grease
from scnumap.core import numap as numap_module

warnings.filterwarnings("ignore")

#: name: (WARM_GREASE_STEPS, the exact solver's learning rate)
VARIANTS = {"300 steps, 3e-3": (None, 3e-3), "100 steps, 6e-3": (numap_module.WARM_GREASE_STEPS, 6e-3)}


@contextlib.contextmanager
def with_variant(name: str):
    steps, lr = VARIANTS[name]
    with mock.patch.object(numap_module, "WARM_GREASE_STEPS", steps), mock.patch.dict(grease.DEFAULT_LR, {"exact": lr}):
        yield


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney", "cbmc"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000], help="sample sizes (cells)")
    parser.add_argument("--splits", type=int, default=3, help="seeded 70/30 splits of the transfer")
    args = parser.parse_args(argv)
    warm_up(peers=True)  # numba code of both paths (exact kNN below 8,192 cells, pynndescent above)
    warm = np.random.default_rng(0).standard_normal((300, 20)).astype(np.float32)
    numap_fit(warm, 0, True)  # the layout's numba code, torch's allocations
    umap_fit(warm, 0, True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    header = (
        "| sample | method | fit s | GrEASE s | DensMAP fit s | trust@15 | kNN pres@15 | density r "
        "| DensMAP density r | transfer acc |"
    )
    rows: dict[tuple[int, str], list[dict]] = {}
    for size in args.sizes:
        print(f"\nSamples of up to {size:,} cells:\n\n{header}\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for set_name in args.names:
            X, labels = sample(set_name, size)
            smaller = [s for s in args.sizes if s < size]
            if smaller and len(X) <= max(smaller):
                continue  # the same cells as the smaller size's sample
            label = f"{set_name} ({len(X):,})"
            for name in VARIANTS:
                with with_variant(name):
                    row = measure(numap_fit, X, labels, args.splits)
                    row["grease_s"] = phases(X)[0]["GrEASE"]  # GrEASE in a plain fit of X (fit_profile.phases)
                rows.setdefault((size, name), []).append(row)
                print_table_row(label, f"scnumap, GrEASE {name}", row)
            row = measure(umap_fit, X, labels, args.splits)
            rows.setdefault((size, "umap-learn"), []).append(row)
            print_table_row(label, "umap-learn", row)
    for size in args.sizes:
        print(f"\nMeans, samples of up to {size:,} cells:\n\n{header}\n|---|---|---|---|---|---|---|---|---|---|")
        for (s, method), group in rows.items():
            if s == size:
                mean = {c: float(np.mean([r[c] for r in group])) for c in (*COLUMNS, "grease_s") if c in group[0]}
                print_table_row(f"{len(group)} sets", method, mean)


def print_table_row(sample_name: str, method: str, row: dict) -> None:
    grease_s = f"{row['grease_s']:.2f}" if "grease_s" in row else "–"
    print(
        f"| {sample_name} | {method} | {row['fit_s']:.1f} | {grease_s} | {row['dens_fit_s']:.1f} | {row['trust']:.3f} "
        f"| {row['knn']:.3f} | {row['density']:.3f} | {row['dens_density']:.3f} | {row['transfer']:.3f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
