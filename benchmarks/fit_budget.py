"""Quality against training compute: the default budget next to smaller ones, in one run.

    .venv/bin/python benchmarks/fit_budget.py [pbmc68k_reduced digits ...]

A NUMAP fit's time is almost all training steps (``benchmarks/fit_profile.py``), and a
step costs about the same whatever the data size, so the ways to a faster fit are fewer
steps or fewer edges per step. For each labelled set (``X_pca``; digits: its pixels) and
each budget, one warm fit (time, trustworthiness@15, kNN preservation@15) and three seeded
70/30 splits (mean kNN label-transfer accuracy of the held-out cells, ``transform``), as in
``benchmarks/quality.py``. A budget is ``batch_size`` (a step reads 8 × ``batch_size`` edges) and a fraction of
the default number of steps (``NUMAP.n_steps`` at ``batch_size=1024``). The default is the
first row; umap-learn's UMAP is the last, the reference of the quality bars.
"""

from __future__ import annotations

import sys
import time
import warnings

from datasets import available
from quality import fit_umap, load, transfer
from scaling import warm_up

from scnumap import NUMAP
from scnumap.core import metrics

warnings.filterwarnings("ignore")

#: (edges per step, fraction of the default steps)
BUDGETS = [(1024, 1.0), (512, 1.0), (256, 1.0), (1024, 0.5), (512, 0.5)]


class Budgeted(NUMAP):
    """NUMAP whose automatic budget is ``fraction`` × the default steps of 1,024 edges."""

    fraction = 1.0

    def n_steps(self, n_edges: int, n_obs: int) -> int:
        return max(1, round(self.fraction * NUMAP(batch_size=1024).n_steps(n_edges, n_obs)))


def fit_budgeted(X, seed: int, batch_size: int, fraction: float) -> NUMAP:
    model = Budgeted(batch_size=batch_size, random_state=seed, device="cpu", verbose=False)
    model.fraction = fraction
    return model.fit(X)


def run(name: str) -> None:
    X, labels = load(name)
    print("| method | edges per step | steps | fit s | trust@15 | kNN pres@15 | transfer acc |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = [(f"scnumap NUMAP, {f:g} × default steps", b, f) for b, f in BUDGETS] + [("umap-learn UMAP", None, None)]
    for method, batch_size, fraction in rows:
        if batch_size is None:

            def fit(X, seed):
                return fit_umap(X, seed)
        else:

            def fit(X, seed, b=batch_size, f=fraction):
                return fit_budgeted(X, seed, b, f)

        t0 = time.perf_counter()
        model = fit(X, 0)
        seconds = time.perf_counter() - t0
        E = model.embedding_
        steps = getattr(model, "n_steps_", "–")
        print(
            f"| {method} | {batch_size or '–'} | {steps} | {seconds:.1f} | {metrics.trustworthiness(X, E):.3f} "
            f"| {metrics.knn_preservation(X, E):.3f} | {transfer(fit, X, labels)[0]:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    warm_up(True)
    for name in sys.argv[1:] or ["pbmc68k_reduced", "digits"]:
        if available(name):
            run(name)
