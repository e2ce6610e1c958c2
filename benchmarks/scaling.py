"""Scaling: fit time, projection throughput and peak memory on synthetic single-cell-like data.

    .venv/bin/python benchmarks/scaling.py --device cpu --fit 10000 100000 --project 1000000 --peers

Data: 50-D mixtures of 20 Gaussian clusters with different sizes (Dirichlet weights)
and densities (scales 0.3–2), seeded. For each ``--fit`` size: scnumap NUMAP and
NUMAP+DensMAP fit (graph + GrEASE + training) time and peak memory; with ``--peers``
also umap-learn's UMAP and densMAP. The plain model of the largest fit then projects
``--project`` cells (warm): throughput and peak memory. With ``--peers``, umap-learn's
``transform`` and ``sc.tl.ingest`` (reference of the largest fit size) map
``--peer-queries`` cells for the per-cell comparison. Peak memory is the process's
resident set sampled during each call (a background thread, every 20 ms); numba code is
compiled before anything is timed. ``--spectral 10 0`` fits NUMAP with each
``n_spectral_components`` in turn (``0``: the automatic count, ``None``) and names the count
in the row. ``--repeats N`` fits each method N times per size and
reports the fastest (the timings of one fit scatter by ±20–30 % on a shared virtual host).
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings

import numpy as np
import torch

from scnumap import NUMAP

warnings.filterwarnings("ignore")


def spectral_params(value: int | None) -> dict:
    """NUMAP's keyword for a ``--spectral`` value of the benchmarks: none when it is left out
    (``None``: NUMAP's default), else ``n_spectral_components``, ``0`` meaning ``None`` (the
    automatic count)."""
    return {} if value is None else {"n_spectral_components": value or None}


def synthetic(n: int, seed: int = 0, dim: int = 50, n_clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(n_clusters, dim))
    scales = rng.uniform(0.3, 2.0, n_clusters)
    sizes = rng.dirichlet(np.full(n_clusters, 0.7))
    labels = rng.choice(n_clusters, size=n, p=sizes)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 200_000):
        lab = labels[start : start + 200_000]
        X[start : start + len(lab)] = centers[lab] + scales[lab, None] * rng.normal(size=(len(lab), dim))
    return X


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1024**3


class PeakRSS:
    """Largest resident set (GB) of this process while the ``with`` block runs."""

    def __enter__(self):
        self.peak = rss_gb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_gb())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gb())


def warm_up(peers: bool) -> None:
    """Compile pynndescent's (and umap-learn's) numba code before anything is timed.

    umap-learn takes another path below 4,096 samples (exact distances, its own numba kNN
    and transform), and with a ``random_state`` another layout (single-threaded) than
    without, so its warm-up fits a large and a small set with a seed, as the benchmarks
    do: with the large set alone and no seed, its first fit of 700 cells took 5.2 s against
    1.0 s warm (its compilation)."""
    X = synthetic(5000, seed=2, dim=10)
    # both kNN paths: exact below 8,192 cells (Euclidean), pynndescent above
    for rows in (X, synthetic(8300, seed=3, dim=10)):
        NUMAP(epochs=1, grease_steps=1, device="cpu").fit(rows)
    if peers:
        import umap

        for rows in (X, X[:1000]):
            umap.UMAP(n_epochs=5, random_state=0).fit(rows).transform(rows[:10])
            umap.UMAP(n_epochs=5, random_state=0, densmap=True).fit(rows)


def fastest(repeats: int, fit, X):
    """The :class:`PeakRSS` of the fastest of ``repeats`` calls of ``fit(X)``, and its result."""
    best = None
    for _ in range(max(1, repeats)):
        with PeakRSS() as watch:
            fitted = fit(X)
        if best is None or watch.seconds < best[0].seconds:
            best = (watch, fitted)
    return best


def row(n, method, watch, gpu="–"):
    print(f"| {n:,} | {method} | {watch.seconds:.1f} | {watch.peak:.2f} | {gpu} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fit", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--project", type=int, default=1_000_000)
    parser.add_argument("--peers", action="store_true", help="also umap-learn and sc.tl.ingest")
    parser.add_argument("--peer-queries", type=int, default=10_000)
    parser.add_argument("--no-densmap", action="store_true", help="skip the NUMAP+DensMAP fits")
    parser.add_argument(
        "--repeats", type=int, default=1, help="fits per method and size: the fastest is reported (its peak memory too)"
    )
    parser.add_argument(
        "--spectral",
        type=int,
        nargs="+",
        default=None,
        help="NUMAP's n_spectral_components, one row each (0: the automatic count, None); the first one's model "
        "projects. Default: NUMAP's default",
    )
    args = parser.parse_args()
    spectral_note = args.spectral is not None
    spectral_settings = args.spectral or [None]
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"GPU: {torch.cuda.get_device_name() if cuda else 'none'}\n"
    )
    warm_up(args.peers)
    print("| cells | method | fit s | peak host GB | peak GPU GB |")
    print("|---|---|---|---|---|", flush=True)
    model = reducer = None
    for n in args.fit:
        X = synthetic(n)
        for densmap in (False,) if args.no_densmap else (False, True):
            for spectral in spectral_settings:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                estimator = NUMAP(device=args.device, random_state=0, densmap=densmap, **spectral_params(spectral))
                watch, fitted = fastest(args.repeats, estimator.fit, X)
                gpu = f"{torch.cuda.max_memory_allocated() / 1024**3:.2f}" if cuda else "–"
                detail = f"{fitted.n_steps_} steps" + (
                    f", {fitted.n_spectral_components_} GrEASE coordinates" if spectral_note else ""
                )
                row(n, f"scnumap NUMAP{'+DensMAP' if densmap else ''} ({detail})", watch, gpu)
                if not densmap and spectral == spectral_settings[0]:
                    model = fitted
        if args.peers:
            import umap

            for densmap in (False, True):
                watch, fitted = fastest(args.repeats, umap.UMAP(random_state=0, densmap=densmap).fit, X)
                row(n, f"umap-learn {'densMAP' if densmap else 'UMAP'}", watch)
                if not densmap:
                    reducer = fitted

    Q = synthetic(args.project, seed=1)
    model.transform(Q[:1000])  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as watch:
        model.transform(Q)
    per_cell = watch.seconds / args.project
    gpu = f", peak GPU {torch.cuda.max_memory_allocated() / 1024**3:.2f} GB" if cuda else ""
    print(
        f"\nscnumap projection of {args.project:,} cells: {watch.seconds:.2f} s = {1 / per_cell:,.0f} cells/s; "
        f"peak host {watch.peak:.2f} GB (the query itself {Q.nbytes / 1024**3:.2f} GB){gpu}",
        flush=True,
    )
    if args.peers:
        peers(X, reducer, Q[: args.peer_queries], per_cell)


def peers(X, reducer, Q, numap_per_cell) -> None:
    """umap-learn ``transform`` and ``sc.tl.ingest`` on the same queries, warm."""
    import anndata
    import scanpy as sc

    print("\n| peer | queries | s | µs/cell | scnumap speed-up |")
    print("|---|---|---|---|---|")
    reducer.transform(Q[:100])
    t0 = time.perf_counter()
    reducer.transform(Q)
    per = (time.perf_counter() - t0) / len(Q)
    print(f"| umap-learn transform | {len(Q):,} | {per * len(Q):.1f} | {per * 1e6:.1f} | {per / numap_per_cell:.0f}× |")

    ref = anndata.AnnData(X)
    sc.pp.neighbors(ref, use_rep="X", random_state=0)
    sc.tl.umap(ref, random_state=0)
    query = anndata.AnnData(Q)
    sc.tl.ingest(query[:100].copy(), ref, embedding_method="umap")  # warm-up
    t0 = time.perf_counter()
    sc.tl.ingest(query, ref, embedding_method="umap")
    per = (time.perf_counter() - t0) / len(Q)
    print(f"| sc.tl.ingest | {len(Q):,} | {per * len(Q):.1f} | {per * 1e6:.1f} | {per / numap_per_cell:.0f}× |")


if __name__ == "__main__":
    main()
