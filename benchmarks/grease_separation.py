"""GrEASE's separation with exact targets: the lazy walk run on the graph against the span
aligned to the targets' eigenvectors.

    .venv/bin/python benchmarks/grease_separation.py [pbmc68k_reduced digits ... circles]
        [--synthetic 20000] [--components 10] [--steps N]

A fit of up to 20,000 points trains GrEASE on the exact eigenvectors of its whole graph
(``solver="exact"``), then separates the individual eigenvectors in the learned span
(docs/method.md, "Separating the eigenvectors"). Two ways to apply the walk ``P^T`` there:

- "walk on the graph": ``T`` sparse products on the whole graph, ``T`` from a one-step
  estimate of ``lambda_k`` (the code before 2026-12-05, and still the walk
  solver's way);
- "aligned to the targets": the rotation of the learned span whose ``j``-th column lies
  closest to the ``j``-th target eigenvector from ``eigsh`` (orthogonal Procrustes; the
  default with exact targets since 2026-12-05 13:25 UTC (93b8204), no walk: ``T`` is 0, and the
  eigenvalues are the targets' own, so their error is 0 by construction). From 03:25 to
  13:25 UTC the default applied the walk through the targets' eigenpairs, ``T`` from the exact
  ``lambda_k`` ("through the spectrum", in the git history of this file and RESULTS.md).

Both fits of a set are the same ``GrEASE(components)`` fit (seed 0) up to the separation.
Columns: the walk length ``T``, the separation's seconds, the whole fit's, the Grassmann
distance of the first 2 / 5 / 10 output columns to the exact random-walk eigenvectors (as
benchmarks/grease_solvers.py), and the largest relative error of the first 10 eigenvalue
estimates. ``circles``: tutorial 1's two circles (``make_circles(5000, noise=0.05,
factor=0.5)``, the 3,500 training points of ``benchmarks/circles.py``'s seed 0), where the
first column is the circle indicator. ``--components 35`` and ``--steps 100`` fit as
``NUMAP(n_spectral_components=None)`` does on 3,500 points that start warm.
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
from circles import two_circles
from datasets import LABELLED, available
from fit_profile import Timed
from grease_solvers import against_eigsh
from scaling import synthetic

from scnumap import GrEASE
from scnumap.core import metrics

warnings.filterwarnings("ignore")

WAYS = ("walk on the graph", "aligned to the targets")


def fit(X: np.ndarray, way: str, components: int, steps: int | None):
    separate = GrEASE._separate
    if way == "walk on the graph":

        def drop_spectrum(self, *args):
            return separate(self, *args[:6])  # table, n, m, gen, device, graph: no eigenpairs

        target = drop_spectrum
    else:
        target = separate
    timed = Timed(target)
    with mock.patch.object(GrEASE, "_separate", lambda self, *args: timed(self, *args)):
        model = GrEASE(components, max_steps=steps, device="cpu", random_state=0)
        t0 = time.perf_counter()
        S = model.fit_transform(X)
        total = time.perf_counter() - t0
    return model, S, timed.seconds, total


def run(name: str, X: np.ndarray, components: int, steps: int | None) -> None:
    exact, values = metrics.exact_spectral_embedding(X, 10, 10, random_walk=True, return_eigenvalues=True)
    GrEASE(10, max_steps=2, device="cpu").fit(X[:300])  # warm-up
    for way in WAYS:
        model, S, separate_s, fit_s = fit(X, way, components, steps)
        model.eigenvalues_ = model.eigenvalues_[:10]
        dist, rel = against_eigsh(model, S[:, :10], exact, values)
        print(
            f"| {name} | {len(X):,} | {way} | {model.separation_walk_steps_:,} | {separate_s:.2f} | {fit_s:.1f} "
            f"| {dist} | {rel:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney", "cbmc"])
    parser.add_argument("--synthetic", type=int, nargs="*", default=[20_000])
    parser.add_argument("--components", type=int, default=10, help="GrEASE's output coordinates")
    parser.add_argument("--steps", type=int, default=None, help="GrEASE's max_steps (default: its own)")
    args = parser.parse_args()
    print(f"GrEASE({args.components}, max_steps={args.steps}), seed 0\n")
    print(
        "| data | cells | separation | walk T | separation s | fit s | Grassmann distance 2 / 5 / 10 "
        "| eigenvalue rel. error (max, non-zero) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.names:
        if name == "circles":
            run("circles", two_circles(5000, seed=0)[0], args.components, args.steps)
        elif available(name):
            X = np.ascontiguousarray(LABELLED[name]().obsm["X_pca"], dtype=np.float32)
            run(name, X, args.components, args.steps)
    for n in args.synthetic:
        run(f"synthetic ({n:,})", synthetic(n), args.components, args.steps)
