"""Two circles: do the loops stay apart in the map, and where do held-out points land?

    .venv/bin/python benchmarks/circles.py [--seeds 0 1 2 3]

``make_circles(n_samples=5000, noise=0.05, factor=0.5)`` (tutorial 1's data), split 70/30
stratified by circle with ``random_state=seed``; ``NUMAP(random_state=seed)`` with its
defaults (the warm start, then grouped steps) on the training points. Prints, per seed: the kNN (k = 15)
accuracy of the held-out points' circle among the training points' embedding, the share
of training points with a point of the other circle among their 15 nearest neighbours in
the map (0 when the two loops lie apart; tutorial 1 draws this map) and the fit time. A
global-structure check that the data sets' metrics do not make: run it on two commits
(``benchmarks/with_commit.py WORKTREE benchmarks/circles.py ...``) to compare them.
``--no-warm-start``: the fits start cold.
``--n-samples``: points drawn (default 5,000; 1,400 leave 980 training points, which train
by whole-graph steps). ``--spectral N``: ``n_spectral_components`` (0: the automatic count).

Each loop's shape in the map, from its points ordered by their angle in the input (72 bins
of 5°, the mean map position of each): the *turning number* of that closed polygon, its
edges' total turn over 2π (1 for a loop drawn as a ring, also an open one; 0 for one folded
into a figure of eight) and its *largest step* between neighbouring bins over the median step (about 1
for an even ring; large where the loop is drawn open, as a C, or torn). ``--plot FILE``:
the seeds' maps side by side in one PNG.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scaling import spectral_params, warm_up
from sklearn.datasets import make_circles
from sklearn.model_selection import train_test_split

from scnumap import NUMAP
from scnumap.core import metrics

warnings.filterwarnings("ignore")


#: Angle bins of a loop's polygon.
LOOP_BINS = 72


def loop_shape(X: np.ndarray, E: np.ndarray) -> tuple[float, float]:
    """Turning number and largest step (over the median) of one loop's binned map polygon."""
    centre = X.mean(axis=0)
    angle = np.arctan2(X[:, 1] - centre[1], X[:, 0] - centre[0])
    bins = np.floor((angle + np.pi) / (2 * np.pi) * LOOP_BINS).astype(int).clip(0, LOOP_BINS - 1)
    polygon = np.array([E[bins == b].mean(axis=0) for b in range(LOOP_BINS) if np.any(bins == b)])
    edges = np.diff(np.vstack([polygon, polygon[:1]]), axis=0)
    heading = np.arctan2(edges[:, 1], edges[:, 0])
    turns = np.angle(np.exp(1j * (np.roll(heading, -1) - heading)))  # each in (-pi, pi]
    steps = np.linalg.norm(edges, axis=1)
    return float(abs(turns.sum()) / (2 * np.pi)), float(steps.max() / np.median(steps))


def two_circles(n_samples: int, seed: int) -> list[np.ndarray]:
    """Tutorial 1's data, ``make_circles(noise=0.05, factor=0.5)`` in float32, split 70/30
    stratified by circle with ``random_state=seed``: ``X_train, X_test, y_train, y_test``."""
    X, y = make_circles(n_samples=n_samples, noise=0.05, factor=0.5, random_state=0)
    return train_test_split(X.astype(np.float32), y, test_size=0.3, stratify=y, random_state=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--no-warm-start", action="store_true", help="fit with `warm_start=False`")
    parser.add_argument("--n-samples", type=int, default=5000, help="points of make_circles (70 %% train)")
    parser.add_argument("--spectral", type=int, default=None, help="n_spectral_components (0: automatic)")
    parser.add_argument("--plot", default=None, help="PNG of the seeds' maps")
    args = parser.parse_args()
    params = spectral_params(args.spectral)
    warm_up(peers=False)
    print(f"make_circles(n_samples={args.n_samples}), {int(0.7 * args.n_samples)} training points, {params}\n")
    print(
        "| seed | held-out kNN accuracy | training points with an other-circle neighbour "
        "| turning number outer / inner | largest step outer / inner (× median) | fit s |"
    )
    print("|---|---|---|---|---|---|", flush=True)
    maps = []
    for seed in args.seeds:
        X_train, X_test, y_train, y_test = two_circles(args.n_samples, seed)
        t0 = time.perf_counter()
        model = NUMAP(random_state=seed, warm_start=not args.no_warm_start, device="cpu", verbose=False, **params).fit(
            X_train
        )
        fit_s = time.perf_counter() - t0
        E = model.embedding_
        accuracy = metrics.label_transfer_accuracy(E, y_train, model.transform(X_test), y_test)
        shapes = [loop_shape(X_train[y_train == c], E[y_train == c]) for c in (0, 1)]
        print(
            f"| {seed} | {accuracy:.4f} | {metrics.other_label_share(E, y_train):.4f} "
            f"| {shapes[0][0]:.0f} / {shapes[1][0]:.0f} | {shapes[0][1]:.1f} / {shapes[1][1]:.1f} | {fit_s:.1f} |",
            flush=True,
        )
        maps.append((seed, E, y_train))
    if args.plot:
        plot(maps, args.plot, params)


def plot(maps, path: str, params: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.8), squeeze=False)
    for ax, (seed, E, y) in zip(axes[0], maps):
        ax.scatter(*E.T, s=1, c=np.array(["#1f77b4", "#ff7f0e"])[y], rasterized=True)
        ax.set(title=f"seed {seed}", xticks=[], yticks=[], aspect="equal")
    fig.suptitle(f"NUMAP on two circles {params or '(defaults)'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
