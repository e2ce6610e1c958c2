"""GrEASE's two solvers against ``eigsh`` on the same graph: time and Grassmann distance.

    .venv/bin/python benchmarks/grease_solvers.py [pbmc68k_reduced digits pbmc4k cbmc ...]

For each labelled set (``X_pca``): ``GrEASE(10)`` trained with the exact targets
(``solver="exact"``: the eigenvectors of the whole training graph, computed once) and with
the walk objective on random batches (``solver="walk"``), each at its defaults and at the
other's step budget and learning rate; the exact targets also at the learning rate they had
before 2026-12-05 (3e-3) and at the 100 steps of a NUMAP fit that starts warm. Columns: warm
fit time, the Grassmann distance between the first 2 / 5 / 10 output columns and the exact
random-walk eigenvectors of the Laplace-kernel kNN graph built on all points (0 = same span), and the largest relative
error of the eigenvalue estimates (of the 10 exact eigenvalues above 1e-6).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
from datasets import LABELLED, available

from scnumap import GrEASE
from scnumap.core import metrics

warnings.filterwarnings("ignore")

SETTINGS = [  # solver, max_steps, lr (None: the solver's default)
    ("exact", None, None),
    ("exact", None, 3e-3),  # the default learning rate before 2026-12-05
    ("exact", 100, None),  # a warm-started NUMAP fit's budget (scnumap.core.numap.WARM_GREASE_STEPS)
    ("exact", 600, 1e-3),
    ("walk", None, None),
    ("walk", 300, 3e-3),
]


def against_eigsh(model: GrEASE, S: np.ndarray, exact: np.ndarray, values: np.ndarray) -> tuple[str, float]:
    """Grassmann distances of ``S``'s first 2 / 5 / 10 columns to the exact eigenvectors (as
    printed), and the largest relative error of ``model.eigenvalues_`` over the exact
    eigenvalues above 1e-6 (NaN if none is)."""
    dist = " / ".join(f"{metrics.grassmann_distance(S[:, :j], exact[:, :j]):.4f}" for j in (2, 5, 10))
    nonzero = values > 1e-6  # a second component's eigenvalue 0 has no relative error
    if not nonzero.any():
        return dist, float("nan")
    return dist, float(np.max(np.abs(model.eigenvalues_ - values)[nonzero] / values[nonzero]))


def run(name: str) -> None:
    X = np.ascontiguousarray(LABELLED[name]().obsm["X_pca"], dtype=np.float32)
    t0 = time.perf_counter()
    exact, values = metrics.exact_spectral_embedding(X, 10, 10, random_walk=True, return_eigenvalues=True)
    eigsh_s = time.perf_counter() - t0
    GrEASE(10, max_steps=2, device="cpu").fit(X[:300])  # warm-up
    for solver, steps, lr in SETTINGS:
        model = GrEASE(10, solver=solver, max_steps=steps, lr=lr, device="cpu", random_state=0)
        t0 = time.perf_counter()
        S = model.fit_transform(X)
        fit_s = time.perf_counter() - t0
        dist, rel = against_eigsh(model, S, exact, values)
        lr_text = "default" if lr is None else f"{lr:g}"
        setting = f"{'default' if steps is None else steps} steps, lr {lr_text}"
        print(
            f"| {name} | {len(X):,} | {solver} | {setting} | {model.n_steps_} | {fit_s:.1f} | {dist} | {rel:.3f} |",
            flush=True,
        )
    print(f"| {name} | {len(X):,} | eigsh on the whole graph (reference) | – | – | {eigsh_s:.1f} | 0 | 0 |", flush=True)


if __name__ == "__main__":
    names = sys.argv[1:] or ["pbmc68k_reduced", "digits", "pbmc4k", "cbmc"]
    print(
        "| data | cells | solver | setting | steps run | fit s | Grassmann distance 2 / 5 / 10 "
        "| eigenvalue rel. error (max, non-zero) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        if available(name):
            run(name)
