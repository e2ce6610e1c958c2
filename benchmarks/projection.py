"""Reference → query projection: scnumap.tl.project next to sc.tl.ingest, in one run.

    .venv/bin/python benchmarks/projection.py [wang_xin pbmc68k_reduced pbmc4k kidney cbmc kang]

Both get the same reference (PCA, neighbour graph) and the same query. Label-transfer
accuracy is the fraction of query cells whose transferred label equals their own; the
scnumap vote runs in the reference's representation (its PCA space). Three warm times
per cell (after a warm-up call; the fastest of three calls each): scnumap's
``NUMAP.transform`` alone (the forward pass on query coordinates already in the reference
PCA space), scnumap's whole ``tl.project`` (genes → reference PCA → query correction →
mapping score → labels → embedding) and ``sc.tl.ingest``'s whole call (PCA, kNN labels,
UMAP embedding); the speed-up compares the two whole calls, like for like. Splits by cells are 70/30
(mean over three seeds); Wang → Xin crosses technologies; Kang ctrl → stim has no
cell-type labels and is timed only.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import scanpy as sc
from datasets import LABELLED, available, kang, wang_xin

import scnumap

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0

#: Timed calls per measurement; the fastest counts.
REPEATS = 3


def prepare_reference(ref):
    if "X_pca" not in ref.obsm:
        sc.pp.pca(ref, n_comps=50, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    t0 = time.perf_counter()
    scnumap.tl.numap(ref, random_state=0)
    numap_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.tl.umap(ref, random_state=0)
    umap_fit = time.perf_counter() - t0
    return numap_fit, umap_fit


def transform_only(ref, query) -> float:
    """Seconds of ``NUMAP.transform`` on the query's reference-PCA coordinates (warm)."""
    from scnumap.tl._project import load_reference

    model = load_reference(ref)[2]
    X = query[:, ref.var_names].X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    ref_X = ref.X.toarray() if hasattr(ref.X, "toarray") else np.asarray(ref.X)
    coords = ((X - ref_X.mean(axis=0)) @ ref.varm["PCs"])[:, : model.n_features_in_].astype(np.float32)
    model.transform(coords[:10])  # warm-up
    return best_of(lambda: model.transform(coords))


def best_of(call, repeats: int = REPEATS) -> float:
    """Fastest of ``repeats`` timed calls, in seconds (a single call of a few milliseconds
    varies about 2× on a shared or busy machine)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def compare(ref, query, labelled=True):
    obs = "label" if labelled else None
    q1, q2 = query.copy(), query.copy()
    t_transform = transform_only(ref, query)
    scnumap.tl.project(q1[:10].copy(), ref, obs=obs)  # warm-up
    t_numap = best_of(lambda: scnumap.tl.project(q1, ref, obs=obs))
    ingest_obs = obs if labelled else None
    sc.tl.ingest(q2[:10].copy(), ref, obs=ingest_obs)  # warm-up (numba)
    t_ingest = best_of(lambda: sc.tl.ingest(q2, ref, obs=ingest_obs))
    acc_numap = acc_ingest = float("nan")
    if labelled:
        truth = query.obs["label"].astype(str).to_numpy()
        acc_numap = np.mean(q1.obs["label_numap"].astype(str).to_numpy() == truth)
        acc_ingest = np.mean(q2.obs["label"].astype(str).to_numpy() == truth)
    n = query.n_obs
    return acc_numap, acc_ingest, t_transform / n, t_numap / n, t_ingest / n


def row(name, n_ref, n_query, results, fits):
    r = np.nanmean(np.array(results), axis=0)
    print(
        f"| {name} | {n_ref} → {n_query} | {r[0]:.3f} | {r[1]:.3f} | {r[2] * 1e6:.1f} | {r[3] * 1e6:.1f} "
        f"| {r[4] * 1e6:.1f} | {r[4] / r[3]:.0f}× | {np.mean([f[0] for f in fits]):.1f} "
        f"| {np.mean([f[1] for f in fits]):.1f} |",
        flush=True,
    )


def split(ad, seed: int):
    """``ad`` split 70/30 by cells (seed ``seed``), without its embeddings and graph; the
    reference (70 %) gets its own PCA (seed ``seed``)."""
    order = np.random.default_rng(seed).permutation(ad.n_obs)
    ref = ad[order[: int(0.7 * ad.n_obs)]].copy()
    query = ad[order[int(0.7 * ad.n_obs) :]].copy()
    for a in (ref, query):
        for key in ("X_pca", "X_umap"):
            a.obsm.pop(key, None)
        a.uns.pop("neighbors", None)
    sc.pp.pca(ref, n_comps=min(50, ref.n_vars - 1), random_state=seed)
    return ref, query


def run(name):
    if name == "wang_xin":
        ref, query = wang_xin()
        fits = [prepare_reference(ref)]
        row("Wang → Xin (pancreas, cross-technology)", ref.n_obs, query.n_obs, [compare(ref, query)], fits)
        return
    if name == "kang":
        ref, query = kang()
        fits = [prepare_reference(ref)]
        row("Kang ctrl → stim (timing only)", ref.n_obs, query.n_obs, [compare(ref, query, labelled=False)], fits)
        return
    ad = LABELLED[name]()
    results, fits = [], []
    for seed in range(3):
        ref, query = split(ad, seed)
        fits.append(prepare_reference(ref))
        results.append(compare(ref, query))
    row(f"{name} (70/30 by cells, 3 seeds)", ref.n_obs, query.n_obs, results, fits)


if __name__ == "__main__":
    names = sys.argv[1:] or ["wang_xin", "pbmc68k_reduced", "pbmc4k", "kidney", "kang"]
    import datetime
    import platform

    import torch

    print(
        f"{datetime.date.today()}, {platform.node()}: {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, scanpy {sc.__version__}, scnumap {scnumap.__version__}\n"
    )
    print(
        "| data | cells | acc scnumap (vote in reference PCA) | acc ingest | scnumap transform only µs/cell "
        "| scnumap tl.project (+ labels) µs/cell | ingest whole call (+ labels) µs/cell "
        "| speed-up, tl.project vs ingest | tl.numap fit s | sc.tl.umap fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        if available(name) or name in ("pbmc68k_reduced",):
            run(name)
        else:
            print(f"| {name} | data set absent | | | | | | | | |")
