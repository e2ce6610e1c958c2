"""Two circles: do the loops stay apart in the map, and where do held-out points land?

    .venv/bin/python benchmarks/circles.py [--seeds 0 1 2 3]

``make_circles(n_samples=5000, noise=0.05, factor=0.5)`` (tutorial 1's data), split 70/30
stratified by circle with ``random_state=seed``; ``NUMAP(random_state=seed)`` with its
defaults (the warm start, then grouped steps) on the training points. Prints, per seed: the kNN (k = 15)
accuracy of the held-out points' circle among the training points' embedding, the share
of training points with a point of the other circle among their 15 nearest neighbours in
the map (0 when the two loops lie apart; tutorial 1 draws this map) and the fit time. A
global-structure check that the data sets' metrics do not make: run it on two commits
(``PYTHONPATH`` of a worktree) to compare them. ``--no-warm-start``: the fits start cold.
``--n-samples``: points drawn (default 5,000; 1,400 leave 980 training points, which train
by whole-graph steps). ``--spectral N``: ``n_spectral_components`` (0: the automatic count).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scaling import warm_up
from sklearn.datasets import make_circles
from sklearn.model_selection import train_test_split

from scnumap import NUMAP
from scnumap.core import metrics

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--no-warm-start", action="store_true", help="fit with `warm_start=False`")
    parser.add_argument("--n-samples", type=int, default=5000, help="points of make_circles (70 %% train)")
    parser.add_argument("--spectral", type=int, default=None, help="n_spectral_components (0: automatic)")
    args = parser.parse_args()
    params = {} if args.spectral is None else {"n_spectral_components": args.spectral or None}
    warm_up(peers=False)
    X, y = make_circles(n_samples=args.n_samples, noise=0.05, factor=0.5, random_state=0)
    X = X.astype(np.float32)
    print(f"make_circles(n_samples={args.n_samples}), {int(0.7 * args.n_samples)} training points, {params}\n")
    print("| seed | held-out kNN accuracy | training points with an other-circle neighbour | fit s |")
    print("|---|---|---|---|", flush=True)
    for seed in args.seeds:
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
        t0 = time.perf_counter()
        model = NUMAP(random_state=seed, warm_start=not args.no_warm_start, device="cpu", verbose=False, **params).fit(
            X_train
        )
        fit_s = time.perf_counter() - t0
        E = model.embedding_
        accuracy = metrics.label_transfer_accuracy(E, y_train, model.transform(X_test), y_test)
        print(f"| {seed} | {accuracy:.4f} | {metrics.other_label_share(E, y_train):.4f} | {fit_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
