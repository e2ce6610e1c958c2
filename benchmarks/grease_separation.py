"""GrEASE's separation with exact targets: the lazy walk run on the graph against the walk
applied through the targets' eigenpairs.

    .venv/bin/python benchmarks/grease_separation.py [pbmc68k_reduced digits ...] [--synthetic 20000]

A fit of up to 20,000 points trains GrEASE on the exact eigenvectors of its whole graph
(``solver="exact"``), then separates the individual eigenvectors in the learned span
(docs/method.md, "Separating the eigenvectors"). Two ways to apply the walk ``P^T`` there:

- "walk on the graph": ``T`` sparse products on the whole graph, ``T`` from a one-step
  estimate of ``lambda_k`` (the code before 2026-12-05, and still the walk
  solver's way);
- "through the spectrum": ``P^T`` applied through the ``k + 2`` target eigenpairs from
  ``eigsh``, ``T`` from the exact ``lambda_k`` (the default with exact targets).

Both fits of a set are the same ``GrEASE(10)`` fit (seed 0) up to the separation. Columns:
the walk length ``T``, the separation's seconds, the whole fit's, the Grassmann distance of the
first 2 / 5 / 10 output columns to the exact random-walk eigenvectors (as
benchmarks/grease_solvers.py), and the largest relative error of the eigenvalue estimates.
``--synthetic N``: also N points of ``scaling.synthetic`` (20 Gaussian clusters that are
almost disconnected in the graph, so most of the 10 eigenvalues are near 0 and the
eigenvectors among them are not unique: its distances say little, its seconds are the point).
"""

from __future__ import annotations

import argparse
import time
import warnings
from unittest import mock

import numpy as np
from datasets import LABELLED, available
from fit_profile import Timed
from grease_solvers import against_eigsh
from scaling import synthetic

from scnumap import GrEASE
from scnumap.core import metrics

warnings.filterwarnings("ignore")

WAYS = ("walk on the graph", "through the spectrum")


def fit(X: np.ndarray, way: str):
    separate = GrEASE._separate
    if way == "walk on the graph":

        def drop_spectrum(self, *args):
            return separate(self, *args[:6])  # table, n, m, gen, device, graph: no eigenpairs

        target = drop_spectrum
    else:
        target = separate
    timed = Timed(target)
    with mock.patch.object(GrEASE, "_separate", lambda self, *args: timed(self, *args)):
        model = GrEASE(10, device="cpu", random_state=0)
        t0 = time.perf_counter()
        S = model.fit_transform(X)
        total = time.perf_counter() - t0
    return model, S, timed.seconds, total


def run(name: str, X: np.ndarray) -> None:
    exact, values = metrics.exact_spectral_embedding(X, 10, 10, random_walk=True, return_eigenvalues=True)
    GrEASE(10, max_steps=2, device="cpu").fit(X[:300])  # warm-up
    for way in WAYS:
        model, S, separate_s, fit_s = fit(X, way)
        dist, rel = against_eigsh(model, S, exact, values)
        print(
            f"| {name} | {len(X):,} | {way} | {model.separation_walk_steps_:,} | {separate_s:.2f} | {fit_s:.1f} "
            f"| {dist} | {rel:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney", "cbmc"])
    parser.add_argument("--synthetic", type=int, nargs="*", default=[20_000])
    args = parser.parse_args()
    print(
        "| data | cells | separation | walk T | separation s | fit s | Grassmann distance 2 / 5 / 10 "
        "| eigenvalue rel. error (max, non-zero) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.names:
        if available(name):
            run(name, np.ascontiguousarray(LABELLED[name]().obsm["X_pca"], dtype=np.float32))
    for n in args.synthetic:
        run(f"synthetic ({n:,})", synthetic(n))
