"""Growing a reference: ``scnumap.tl.extend`` next to a full refit on the union, in one run.

    .venv/bin/python benchmarks/extend.py [--seeds N] [pbmc68k_reduced paul15 pbmc4k bladder kidney ...]
    .venv/bin/python benchmarks/extend.py --hold 1 0.3 0.1 [--release on off] [--seeds N] [paul15 kidney ...]
    .venv/bin/python benchmarks/extend.py --stages [--seeds N] [...]
    .venv/bin/python benchmarks/extend.py --no-layout [--seeds N] [...]
    .venv/bin/python benchmarks/extend.py --layout-epochs E [--seeds N] [...]

For each labelled set: one cell type (the median-sized of those with at least 30 cells)
and 30 % of the other cells are held out of the first fit (``sc.pp.pca`` on the first
cells, ``sc.pp.neighbors``, ``tl.numap`` with its defaults, DensMAP on); they are then
added with ``tl.extend`` (which puts them in the first cells' PCs and builds the graph of
the union), and the union is refitted from scratch (``sc.pp.neighbors`` + ``tl.numap`` on
the same PCs) for comparison. Prints one markdown table:

- displacement of the old cells: median and 95th percentile of the distance between
  their coordinates before and after, as a fraction of the map's extent (the longer side
  of the first embedding's bounding box);
- on the union, in its PCA: trustworthiness@15, kNN preservation@15, density correlation
  (local radii at 15 neighbours);
- kNN accuracy (15 neighbours, majority vote) of the added cells' labels among all other
  cells in 2-D, for all added cells and for the held-out type alone;
- time: ``tl.extend`` (graph of the union included) and the refit (graph + fit), warm:
  the numba code of pynndescent and of umap-learn's layout (which ``tl.extend`` runs)
  compiled before anything is timed.

With ``--seeds N`` (default 2) each set runs N times (seed s: the held-out 30 %, the PCA,
the graphs and the fits); the table gives the mean over seeds, and min–max where it varies.

With ``--hold H ...`` no refit is made: the same first map is extended once per value of
``hold`` (the weight that keeps the old cells in place), which prints the trade-off between
how far the old cells move and how well the added cells are placed; ``--release on off``
extends it once per ``hold`` with and once without the release of old cells whose
neighbours are mostly new (``tl.extend(release=...)``).

With ``--stages`` no refit is made either: for each set and seed, the added cells' kNN
accuracy (all of them, and the held-out type) at each stage of the extension: the layout of
the new cells (``layout_new_rows``, the old cells fixed), that layout after the density
polish (``polish_density``; with DensMAP) and the network's final embedding. It shows which
stage loses the placement the layout found.

``--layout-epochs E`` runs the new cells' layout for E epochs instead of the library's
``scnumap.core.new_rows.LAYOUT_EPOCHS`` (a sweep of that setting).

``--no-layout`` extends without the layout of the new cells and their pull towards it
(``scnumap.core.numap.NEW_ROWS_HOLD = 0``), as the code did before 2026-12-03.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from datasets import LABELLED, available
from scaling import warm_up
from sklearn.neighbors import NearestNeighbors

import scnumap
from scnumap.core import metrics, new_rows
from scnumap.core import numap as numap_module
from scnumap.core.new_rows import layout_new_rows

warnings.filterwarnings("ignore")

NEW_FRACTION = 0.3
MIN_TYPE_CELLS = 30
K = 15


def held_out_type(labels: np.ndarray) -> str:
    types, counts = np.unique(labels, return_counts=True)
    order = np.argsort(counts)
    eligible = [types[i] for i in order if counts[i] >= MIN_TYPE_CELLS]
    return eligible[len(eligible) // 2]


def split(ad, seed: int = 0):
    labels = ad.obs["label"].astype(str).to_numpy()
    new_type = held_out_type(labels)
    new = (labels == new_type) | (np.random.default_rng(seed).random(ad.n_obs) < NEW_FRACTION)
    ref, add = ad[~new].copy(), ad[new].copy()
    for part in (ref, add):
        for key in list(part.obsm):
            del part.obsm[key]
        part.uns.pop("neighbors", None)
        for key in list(part.obsp):
            del part.obsp[key]
    sc.pp.pca(ref, n_comps=min(50, ref.n_vars - 1), random_state=seed)
    sc.pp.neighbors(ref, n_neighbors=K, random_state=seed)
    return ref, add, new_type


def knn_accuracy(Y: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    """Majority label of each row's ``K`` nearest other points equals its own."""
    if rows.size == 0:
        return float("nan")
    neighbours = NearestNeighbors(n_neighbors=K + 1).fit(Y).kneighbors(Y[rows], return_distance=False)[:, 1:]
    hits = []
    for row, nbrs in zip(rows, neighbours, strict=True):
        values, counts = np.unique(labels[nbrs], return_counts=True)
        hits.append(values[np.argmax(counts)] == labels[row])
    return float(np.mean(hits))


def scores(X: np.ndarray, Y: np.ndarray, labels: np.ndarray, new_rows: np.ndarray, new_type: str) -> list[float]:
    return [
        metrics.trustworthiness(X, Y, K),
        metrics.knn_preservation(X, Y, K),
        metrics.density_correlation(X, Y, K),
        knn_accuracy(Y, labels, new_rows),
        knn_accuracy(Y, labels, new_rows[labels[new_rows] == new_type]),
    ]


def first_map(name: str, seed: int):
    """The split of ``name`` and the first map: reference, added cells, new type, coordinates."""
    ref, add, new_type = split(LABELLED[name](), seed)
    scnumap.tl.numap(ref, random_state=seed, verbose=False)
    return ref, add, new_type, ref.obsm["X_numap"].copy()


def timed_extend(ref, add, seed: int, **kwargs):
    t = time.perf_counter()
    union = scnumap.tl.extend(ref, add, random_state=seed, verbose=False, **kwargs)
    return union, time.perf_counter() - t


def moved(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Distance each old cell moved ÷ the longer side of the first map's bounding box."""
    return np.linalg.norm(after[: before.shape[0]] - before, axis=1) / float(np.ptp(before, axis=0).max())


def union_scores(union, Y: np.ndarray, n_old: int, new_type: str) -> list[float]:
    """:func:`scores` of the embedding ``Y`` of ``union``, whose rows from ``n_old`` on were added."""
    X = np.asarray(union.obsm["X_pca"], dtype=np.float32)
    labels = union.obs["label"].astype(str).to_numpy()
    return scores(X, Y, labels, np.arange(n_old, union.n_obs), new_type)


def run(name: str, seed: int) -> dict:
    """One seed on one set: the numbers of both methods."""
    ref, add, new_type, before = first_map(name, seed)
    union, t_extend = timed_extend(ref, add, seed)
    distance = moved(before, union.obsm["X_numap"])

    refit = union.copy()
    del refit.uns["numap"], refit.obsm["X_numap"]
    t = time.perf_counter()
    sc.pp.neighbors(refit, n_neighbors=K, use_rep="X_pca", random_state=seed)
    scnumap.tl.numap(refit, random_state=seed, verbose=False)
    t_refit = time.perf_counter() - t

    n_new_type = int((union.obs["label"].astype(str) == new_type).sum())
    return {
        "size": f"{ref.n_obs} + {add.n_obs} ({new_type}: {n_new_type})",
        "moved": (float(np.median(distance)), float(np.quantile(distance, 0.95))),
        "extend": [*union_scores(union, union.obsm["X_numap"], ref.n_obs, new_type), t_extend],
        "refit": [*union_scores(union, refit.obsm["X_numap"], ref.n_obs, new_type), t_refit],
    }


def hold_sweep(name: str, seed: int, settings: list[tuple[float, bool]]) -> list[list[float]]:
    """One first map of ``name`` extended once per ``(hold, release)``: displacement, scores, time."""
    ref, add, new_type, before = first_map(name, seed)
    rows = []
    for hold, release in settings:
        union, seconds = timed_extend(ref, add, seed, hold=hold, release=release)
        distance = 100 * moved(before, union.obsm["X_numap"])
        scored = union_scores(union, union.obsm["X_numap"], ref.n_obs, new_type)
        rows.append([np.median(distance), np.quantile(distance, 0.95), *scored, seconds])
    return rows


def warm_up_layout() -> None:
    """Compile umap-learn's layout optimiser (numba) before anything is timed: a process's
    first extension pays its compilation once, as ``warm_up`` spares the fits pynndescent's."""
    rng = np.random.default_rng(0)
    graph = sp.random(60, 60, density=0.1, random_state=rng, format="csr")
    graph = graph.maximum(graph.T)
    layout_new_rows(rng.normal(size=(40, 2)), rng.normal(size=(20, 2)), graph, 1.6, 0.9, n_epochs=5, random_state=0)


def main_holds(names: list[str], seeds: int, holds: list[float], releases: list[bool]) -> None:
    warm_up(False)
    warm_up_layout()
    settings = [(hold, release) for hold in holds for release in releases]
    print(
        "| data | hold | release | old cells moved, median % | 95th % | trust@15 | kNN@15 | density r "
        "| added cells kNN acc | new type kNN acc | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        if not available(name):
            print(f"| {name} | (data absent) | | | | | | | | | |")
            continue
        runs = [hold_sweep(name, seed, settings) for seed in range(seeds)]
        for i, (hold, release) in enumerate(settings):
            cells = [spread([r[i][j] for r in runs], 2 if j < 2 else 3) for j in range(7)]
            times = spread([r[i][7] for r in runs], 1)
            switch = "on" if release else "off"
            print(f"| {name} | {hold:g} | {switch} | " + " | ".join(cells) + f" | {times} |", flush=True)


def spread(values: list[float], digits: int) -> str:
    mean = f"{np.mean(values):.{digits}f}"
    if len(values) == 1 or round(min(values), digits) == round(max(values), digits):
        return mean
    return f"{mean} ({min(values):.{digits}f}–{max(values):.{digits}f})"


class StageRecorder:
    """Wraps the extension's layout and polish (as ``NUMAP.extend`` calls them) to keep their outputs."""

    def __init__(self):
        self.outputs: dict[str, np.ndarray] = {}
        self._layout, self._polish = numap_module.layout_new_rows, numap_module.polish_density

    def __enter__(self):
        numap_module.layout_new_rows = self._recorded(self._layout, "layout")
        numap_module.polish_density = self._recorded(self._polish, "polish")
        return self

    def __exit__(self, *exc):
        numap_module.layout_new_rows, numap_module.polish_density = self._layout, self._polish

    def _recorded(self, function, name: str):
        def wrapper(*args, **kwargs):
            self.outputs[name] = function(*args, **kwargs)
            return self.outputs[name]

        return wrapper


def main_stages(names: list[str], seeds: int) -> None:
    warm_up(False)
    warm_up_layout()
    print(
        "| data | seed | layout: added cells / new type kNN acc | after the polish | network (tl.extend) | time (s) |"
    )
    print("|---|---|---|---|---|---|")
    for name in names:
        if not available(name):
            print(f"| {name} | (data absent) | | | | |")
            continue
        for seed in range(seeds):
            ref, add, new_type, before = first_map(name, seed)
            with StageRecorder() as stages:
                union, seconds = timed_extend(ref, add, seed)
            labels = union.obs["label"].astype(str).to_numpy()
            added = np.arange(ref.n_obs, union.n_obs)
            new_rows = added[labels[added] == new_type]
            cells = []
            for stage in ("layout", "polish", "network"):
                if stage == "network":
                    Y = union.obsm["X_numap"]
                elif stage in stages.outputs:
                    Y = np.concatenate([before, stages.outputs[stage]])
                else:
                    cells.append("–")
                    continue
                cells.append(f"{knn_accuracy(Y, labels, added):.3f} / {knn_accuracy(Y, labels, new_rows):.3f}")
            print(f"| {name} | {seed} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)


def main(names: list[str], seeds: int) -> None:
    warm_up(False)
    warm_up_layout()
    print(
        "| data | cells (first + added; new type), seed 0 | method | old cells moved (median / 95th, of extent) "
        "| trust@15 | kNN@15 | density r | added cells kNN acc | new type kNN acc | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        if not available(name):
            print(f"| {name} | (data absent) | | | | | | | | |")
            continue
        runs = [run(name, seed) for seed in range(seeds)]
        moved = "–"
        for method in ("extend", "refit"):
            if method == "extend":
                median, p95 = (spread([100 * r["moved"][j] for r in runs], 2) for j in (0, 1))
                moved = f"{median} % / {p95} %"
            cells = [spread([r[method][j] for r in runs], 3) for j in range(5)]
            secs = spread([r[method][5] for r in runs], 1)
            label = "tl.extend" if method == "extend" else "refit on union"
            print(
                f"| {name} | {runs[0]['size']} | {label} | {moved if method == 'extend' else '–'} | "
                + " | ".join(cells)
                + f" | {secs} |",
                flush=True,
            )
        ratio = spread([r["extend"][5] / r["refit"][5] for r in runs], 2)
        print(f"| {name} | | extend ÷ refit time | | | | | | | {ratio} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["pbmc68k_reduced", "paul15", "pbmc4k", "bladder", "kidney"])
    parser.add_argument("--seeds", type=int, default=2, help="runs per set (seed s: split, PCA, graphs, fits)")
    parser.add_argument("--hold", type=float, nargs="+", default=None, help="hold values to sweep (no refit)")
    parser.add_argument(
        "--release", choices=["on", "off"], nargs="+", default=["on"], help="with --hold: tl.extend's release"
    )
    parser.add_argument("--stages", action="store_true", help="added cells' kNN accuracy per stage (no refit)")
    parser.add_argument(
        "--no-layout",
        action="store_true",
        help="extend without the layout of the new cells (NEW_ROWS_HOLD = 0: the code before 2026-12-03)",
    )
    parser.add_argument(
        "--layout-epochs",
        type=int,
        default=None,
        help="epochs of the new cells' layout (scnumap.core.new_rows.LAYOUT_EPOCHS; default: the library's)",
    )
    args = parser.parse_args()
    if args.layout_epochs is not None:
        new_rows.LAYOUT_EPOCHS = args.layout_epochs
    if args.no_layout:
        numap_module.NEW_ROWS_HOLD = 0.0
    if args.stages:
        main_stages(args.names, args.seeds)
    elif args.hold:
        main_holds(args.names, args.seeds, args.hold, [value == "on" for value in args.release])
    else:
        main(args.names, args.seeds)
