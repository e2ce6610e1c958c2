"""A fit's first call in a fresh process: the neighbour search's two paths.

    .venv/bin/python benchmarks/first_fit.py [pbmc4k kidney ...]

``NUMAP.fit(X)`` without a graph builds the kNN graph itself (``tl.numap`` without one runs
``sc.pp.neighbors``, which follows the same rule): exact (scikit-learn, brute force) on
small data, pynndescent above. pynndescent's numba code is compiled in the first search of
every new process, and importing umap-learn (whose fuzzy union builds the graph) compiles
pynndescent's distances, so a user's first fit pays for both. Two rules side by side, each in
fresh Python processes:

- "4,096": exact below 4,096 cells whatever the metric (the code before 2026-12-05);
- "scanpy": exact below 8,192 cells for the Euclidean metric, 4,096 for the others
  (``sc.pp.neighbors``'s rule; the default since 2026-12-05).

Columns: seconds of ``import scnumap``, of the first ``NUMAP(random_state=0).fit(X)`` (with
the import of umap-learn and numba's compilation), of a second fit in the same process (warm),
of the kNN search alone when warm (``core.graph.knn_search``, 15 neighbours), and the kNN
preservation of the warm fit's embedding (the exact graph against pynndescent's approximate
one). A row per set and rule; run on an idle machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings

RULES = ("4,096", "scanpy")


def child(name: str, rule: str) -> dict:
    """One fresh process's measures (run by the parent in a subprocess)."""
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    import scnumap
    from scnumap.core import graph, metrics

    t_import = time.perf_counter() - t0
    if rule == "4,096":
        graph.EXACT_KNN_MAX_SAMPLES_EUCLIDEAN = graph.EXACT_KNN_MAX_SAMPLES
    import numpy as np
    from datasets import LABELLED

    X = np.asarray(LABELLED[name]().obsm["X_pca"], dtype=np.float32)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        model = scnumap.NUMAP(random_state=0, device="cpu").fit(X)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    graph.knn_search(X, 15)
    t_knn = time.perf_counter() - t0
    return {
        "cells": X.shape[0],
        "path": "exact" if graph.exact_knn(X.shape[0], "euclidean") else "pynndescent",
        "import": t_import,
        "first": times[0],
        "second": times[1],
        "knn": t_knn,
        "knn_pres": metrics.knn_preservation(X, model.embedding_),
    }


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], argv[2])))
        return
    import platform

    import torch

    sets = argv or ["pbmc4k", "kidney"]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}: "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}\n"
    )
    print(
        "| data | cells | rule | kNN path | import scnumap s | first fit s | second fit s "
        "| kNN search (warm) s | kNN pres@15 |"
    )
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in sets:
        for rule in RULES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, rule], capture_output=True, text=True, check=True
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {name} | {r['cells']} | {rule} | {r['path']} | {r['import']:.1f} | {r['first']:.1f} "
                f"| {r['second']:.1f} | {r['knn']:.2f} | {r['knn_pres']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
