"""Train on a subsample, project the rest: quality against training on every cell, at 100k.

    .venv/bin/python benchmarks/subsample.py --cells 100000 --train 10000 30000

Synthetic data with structure inside the clusters (:func:`structured`): 20 clusters of
different sizes in 50-D, each a 3-D Gaussian in its own random subspace plus a little
isotropic noise (cluster = label), so that a cell's nearest neighbours are not random
within its cluster and kNN preservation measures something. ``NUMAP(densmap=True, random_state=0)`` is fitted on all
cells, and on uniform subsamples of ``--train`` cells whose model then embeds every cell
(``transform``). Each embedding of all cells is measured on 5,000 evaluation cells (the
same for every row), against all cells: kNN preservation@15 (their 15 nearest cells in
the data and in the 2-D map, among all cells), density r (Pearson r of their local log
radii in the data and the map, 15 neighbours among all cells) and 2-D label accuracy (a
15-NN vote of the other cells' labels at their 2-D positions). Times: the fit, and the
``transform`` of all cells.
"""

from __future__ import annotations

import argparse
import datetime
import time
import warnings

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from scnumap import NUMAP

warnings.filterwarnings("ignore")

#: Evaluation cells (the same for every row).
N_EVAL = 5000
K = 15


def structured(n: int, seed: int = 0, dim: int = 50, n_clusters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Cells of 20 clusters, each a 3-D Gaussian in a random subspace of the 50-D space, plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(n_clusters, dim))
    bases = np.stack([np.linalg.qr(rng.normal(size=(dim, 3)))[0].T for _ in range(n_clusters)])  # (c, 3, dim)
    spreads = rng.uniform(1.0, 4.0, size=(n_clusters, 3))
    labels = rng.choice(n_clusters, size=n, p=rng.dirichlet(np.full(n_clusters, 0.7)))
    latent = rng.normal(size=(n, 3)) * spreads[labels]
    X = centres[labels] + np.einsum("nk,nkd->nd", latent, bases[labels]) + rng.normal(scale=0.3, size=(n, dim))
    return X.astype(np.float32), labels


def neighbours(space: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the K nearest cells (itself excluded) of ``rows`` among all cells."""
    d, i = NearestNeighbors(n_neighbors=K + 1).fit(space).kneighbors(space[rows])
    return d[:, 1:], i[:, 1:]


def measures(X: np.ndarray, Y: np.ndarray, labels: np.ndarray, rows: np.ndarray, data_knn) -> tuple[float, ...]:
    d_x, i_x = data_knn
    d_y, i_y = neighbours(Y, rows)
    preservation = np.mean([len(set(a) & set(b)) / K for a, b in zip(i_x, i_y, strict=True)])
    radius_x = np.log(np.mean(d_x**2, axis=1) + 1e-12)
    radius_y = np.log(np.mean(d_y**2, axis=1) + 1e-12)
    density = np.corrcoef(radius_x, radius_y)[0, 1]
    votes = labels[i_y]
    predicted = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
    accuracy = np.mean(predicted == labels[rows])
    return float(preservation), float(density), float(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--train", type=int, nargs="+", default=[10_000, 30_000])
    args = parser.parse_args()
    print(f"{datetime.date.today()}: torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    X, labels = structured(args.cells)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(args.cells, N_EVAL, replace=False))
    data_knn = neighbours(X, rows)
    print("| trained on | fit s | transform of all cells s | kNN preservation@15 | density r | 2-D label accuracy |")
    print("|---|---|---|---|---|---|", flush=True)
    for n_train in [args.cells, *args.train]:
        train = (
            np.arange(args.cells) if n_train >= args.cells else np.sort(rng.choice(args.cells, n_train, replace=False))
        )
        t0 = time.perf_counter()
        model = NUMAP(densmap=True, random_state=0).fit(X[train])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        Y = model.transform(X)
        transform_s = time.perf_counter() - t0
        preservation, density, accuracy = measures(X, Y, labels, rows, data_knn)
        name = "all cells" if n_train >= args.cells else f"uniform {n_train:,} ({n_train / args.cells:.0%})"
        print(
            f"| {name} | {fit_s:.1f} | {transform_s:.1f} | {preservation:.3f} | {density:.3f} | {accuracy:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
