"""Query mapping: mapping score, Unknown, label transfer and 2-D placement, next to Symphony and ingest.

    .venv/bin/python benchmarks/mapping.py [--sets pbmc4k kidney cbmc pbmc68k_reduced paul15]
        [--max-types N] [--sigma 0.5] [--dropout 0.3] [--shift-sets pbmc4k kidney cbmc]
        [--parts A B C D E] [--placement-seeds 0 1 2 3 4] [--torch-threads N] [--cache FILE]

Needs the ``benchmark`` extra (``pip install -e '.[benchmark]'``: symphonypy, harmonypy).
Progress goes to stderr, the markdown tables to stdout. With ``--cache FILE`` every
finished pair is appended to ``FILE`` (JSON lines) and a rerun with the same options takes
it from there instead of fitting it again (all fits are seeded, so the numbers are the
same); the timing (D) is always measured in the run that prints it.

Preprocessing is the same for every method: counts → ``normalize_total(1e4)`` → ``log1p``
(on the whole set; both are per cell) → split → ``sc.pp.pca`` (50 components) on the
**reference** → ``sc.pp.neighbors(n_neighbors=15)``. pbmc68k_reduced is scanpy's scaled
matrix as shipped, Wang → Xin is log-normalised as shipped, with a 30-component reference
PCA (both as ``datasets.py`` loads them). The query enters the reference's PCA space
through the reference's loadings and gene means (scnumap, Symphony, the baseline, and
"ingest (ref mean)"); ``sc.tl.ingest`` as users call it centres the query on the
**query's** own gene means (scanpy's ``Ingest._pca``): the column "ingest".

A. Leave one type out. Each labelled set is split 70/30 by cells (seed 0). For every
   type with ≥ ``--min-query`` (30) query cells, its cells are removed from the reference,
   which then gets its own PCA, graph and ``scnumap.tl.numap(random_state=0)``; the whole
   query is mapped. These measures are computed in the reference PCA space, so part A
   fits NUMAP briefly (``epochs=5, grease_steps=100``; ``--full-fits-a`` for the default
   fit, same numbers but the fit time). Per left-out type: AUROC of the novelty signal for left-out cells
   against the rest (scnumap: ``1 - numap_mapping_score``; Symphony: ``per_cell_confidence``'s
   Mahalanobis distance; baseline: mean distance to the 15 nearest reference cells in
   the reference PCA space; "labels known": the share of left-out cells among each query
   cell's 15 nearest other query cells in the reference PCA, a detector that is told the
   query's labels, which says how far the left-out type stands apart from the kept types
   there), the share of left-out cells called Unknown (TPR), the share
   of known-type cells called Unknown (false Unknown), and label accuracy on known types
   (Unknown counts as wrong; "no Unknown" is the same call with ``unknown_threshold=None``).
B. Wang → Xin (pancreas, two technologies), all types in the reference: accuracy, false
   Unknown, and the 2-D placement: a 15-NN classifier fit on the reference's 2-D
   coordinates and labels predicts each query cell's type at its projected coordinates
   (scnumap by default: ``anchor=2.0`` and the placement by label; with ``anchor=2.0``
   alone, ``place_by_label=False``; the network alone, ``anchor=None``; ingest in its UMAP:
   ``sc.tl.umap(ref)`` then ``sc.tl.ingest(query, ref, embedding_method='umap')``). The
   classifier cannot do better in a map than the map separates the types, so each map's
   *separation* is reported beside it: the leave-one-out accuracy of the same 15-NN
   classifier among the reference's own 2-D coordinates. A second scnumap map of the same
   reference, PCA and graph without the density term (``tl.numap(densmap=False)``, as
   UMAP has none) tells the projection apart from the map. The same query is projected
   once per ``anchor`` of :data:`ANCHORS`, without the placement by label (``None``: the
   network's placement; near 0: every cell at the weighted centre of its reference
   neighbours, ingest's placement in scnumap's map). Its leave-one-type-out rows are in table A.
C. Synthetic technology shift, for each set of ``--shift-sets`` (raw counts; default
   pbmc4k): 70/30 (seed 0); the query's counts are multiplied by gene-wise log-normal
   factors (``--sigma``) and rounded, then binomially thinned (each count kept with
   probability ``1 - --dropout``), before normalisation. Same measures as B.
D. Warm µs per query cell of ``scnumap.tl.project(obs='label')`` (labels, mapping score,
   placement; the reference's kNN index is built in the warm-up call, once per reference)
   and of ``sc.tl.ingest(obs='label')``'s whole call (UMAP embedding and labels), best of
   five, on the pair with the most query cells fitted in this run.
E. The 2-D placement of B and C over seeds of the maps (``--placement-seeds``, default
   0–4): for each seed, the reference (same PCA and graph) gets ``tl.numap(random_state=seed)``
   and the query is projected by default; ingest's UMAP is ``sc.tl.umap(random_state=seed)``.
   One fit's 2-D kNN accuracy scatters by a few thousandths from seed to seed, as much as
   the gaps between the methods on some pairs; the mean over seeds says which is ahead.

Symphony (symphonypy): the reference gets ``var['mean']`` = its gene means and
``var['std']`` = 1, so ``map_embedding(use_genes_column=None)`` puts the query in the same
unscaled reference PCA. None of these references has batches; as Symphony's authors advise
for that case, ``pp.harmony_integrate`` runs with one batch for the whole reference (it
leaves ``X_pca`` unchanged and stores the soft clusters and reference terms that
``map_embedding`` needs; symphonypy's own no-batch path, ``map_embedding`` on a reference
without ``uns['harmony']``, stores the k-means centroids where the query correction expects
the cluster sums ``R @ Z``, and collapses the query toward the origin: 0.46 accuracy on
Wang → Xin instead of 0.96). Labels by ``transfer_labels_kNN`` with ``--symphony-k``
neighbours (default 5, sklearn's and Symphony's default) in the Harmony space, from the
Symphony-corrected query; the mapping metric is ``per_cell_confidence``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from datasets import LABELLED, SCDCC, SHARED, wang_xin
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import scnumap

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0

SETS = ["pbmc4k", "kidney", "cbmc", "pbmc68k_reduced", "paul15"]
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.0f} s] {message}", file=sys.stderr, flush=True)


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def split(ad: anndata.AnnData, seed: int = 0) -> tuple[anndata.AnnData, anndata.AnnData]:
    """70/30 by cells, without anything computed on the whole set (PCA, graph, UMAP)."""
    order = np.random.default_rng(seed).permutation(ad.n_obs)
    cut = int(0.7 * ad.n_obs)
    parts = []
    for rows in (np.sort(order[:cut]), np.sort(order[cut:])):
        part = ad[rows].copy()
        part.obsm.clear()
        part.varm.clear()
        part.obsp.clear()
        part.uns.clear()
        parts.append(part)
    return parts[0], parts[1]


#: ``tl.project``'s ``anchor`` values of the placement sweep (B, C); 1e-6 places every cell at
#: the weighted centre of its reference neighbours' coordinates.
ANCHORS = (None, 4.0, 2.0, 1.0, 0.5, 0.25, 1e-6)


#: Part A's short fit: its measures (score, labels) are computed in the PCA space, not the network's.
QUICK_FIT = {"epochs": 5, "grease_steps": 100}


def reference_graph(ref: anndata.AnnData, n_comps: int) -> None:
    """Reference PCA and neighbour graph, as every method here gets them."""
    sc.pp.pca(ref, n_comps=min(n_comps, ref.n_vars - 1, ref.n_obs - 1), random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)


def fit_reference(ref: anndata.AnnData, n_comps: int, quick: bool = False) -> float:
    """Reference PCA, graph and NUMAP; returns the NUMAP fit in seconds."""
    reference_graph(ref, n_comps)
    t0 = time.perf_counter()
    scnumap.tl.numap(ref, random_state=0, verbose=False, **(QUICK_FIT if quick else {}))
    return time.perf_counter() - t0


def reference_pca(ref: anndata.AnnData, query: anndata.AnnData) -> np.ndarray:
    """The query in the reference's PCA space: (X - reference gene means) @ loadings."""
    mean = dense(ref.X).mean(axis=0)
    Z_ref = (dense(ref.X) - mean) @ ref.varm["PCs"]
    scale = np.abs(ref.obsm["X_pca"]).max()
    if np.abs(Z_ref - ref.obsm["X_pca"]).max() > 1e-3 * scale:
        raise RuntimeError("The reference's X_pca is not (X - mean) @ PCs; the benchmark's preprocessing is broken.")
    return (dense(query[:, ref.var_names].X) - mean) @ ref.varm["PCs"]


def left_out_share(Z_query: np.ndarray, novel: np.ndarray, k: int = 15) -> np.ndarray:
    """Share of left-out cells among each query cell's ``k`` nearest other query cells in the
    reference PCA: a detector that knows the query's labels. Its AUROC says how far the
    left-out type stands apart from the query's other cells in the space every method
    searches; where it is low, a cell of that type has cells of kept types for neighbours,
    and a score built on neighbourhoods has little to go on."""
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(Z_query).kneighbors(Z_query, return_distance=False)
    return novel[neighbours[:, 1:]].mean(axis=1)


def knn_distance(ref: anndata.AnnData, Z_query: np.ndarray, k: int = 15) -> np.ndarray:
    """Baseline novelty: mean distance to the k nearest reference cells in reference PCA."""
    nn = NearestNeighbors(n_neighbors=k).fit(ref.obsm["X_pca"])
    return nn.kneighbors(Z_query)[0].mean(axis=1)


def symphony(ref: anndata.AnnData, query: anndata.AnnData, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Symphony's per-cell mapping metric (higher = worse) and kNN labels."""
    import symphonypy

    r = ref.copy()
    r.var["mean"] = dense(r.X).mean(axis=0)
    r.var["std"] = 1.0
    # one batch: Harmony leaves X_pca as it is and stores Symphony's reference terms
    r.obs["batch"] = "reference"
    symphonypy.pp.harmony_integrate(r, key="batch")
    q = query[:, ref.var_names].copy()
    q.uns["log1p"] = {"base": None}
    symphonypy.tl.map_embedding(q, r, use_genes_column=None)
    symphonypy.tl.per_cell_confidence(q, r)
    symphonypy.tl.transfer_labels_kNN(q, r, "label", query_labels="label_symphony", n_neighbors=k)
    return q.obs["symphony_per_cell_dist"].to_numpy(), q.obs["label_symphony"].astype(str).to_numpy()


def ingest(
    ref: anndata.AnnData, query: anndata.AnnData, Z_query: np.ndarray | None = None, embed: bool = False
) -> anndata.AnnData:
    """``sc.tl.ingest`` labels (and UMAP placement if ``embed``).

    With ``Z_query`` (the query in the reference PCA, reference means) ingest searches
    that instead of centring the query on its own means.
    """
    q = query[:, ref.var_names].copy()
    params = ref.uns["neighbors"]["params"]
    had = params.get("use_rep")
    if Z_query is not None:
        q.obsm["X_pca"] = Z_query.astype(np.float32)
        params["use_rep"] = "X_pca"  # the graph was built on the whole X_pca: same graph
    try:
        sc.tl.ingest(q, ref, obs="label", embedding_method="umap" if embed else [])
    finally:
        if had is None:
            params.pop("use_rep", None)
        else:
            params["use_rep"] = had
    return q


def knn_2d(ref: anndata.AnnData, key: str, coords: np.ndarray, truth: np.ndarray, known: np.ndarray) -> float:
    """Accuracy of a 15-NN classifier on the reference's 2-D coordinates, at the query's."""
    clf = KNeighborsClassifier(n_neighbors=15).fit(ref.obsm[key], ref.obs["label"].astype(str).to_numpy())
    return float(np.mean(clf.predict(coords[known]) == truth[known]))


def map_pair(
    ref: anndata.AnnData,
    query: anndata.AnnData,
    *,
    n_comps: int,
    symphony_k: int,
    placement: bool = False,
    quick: bool = False,
) -> dict:
    """Fit the reference, map the query with every method, return the measures."""
    fit_s = fit_reference(ref, n_comps, quick)
    truth = query.obs["label"].astype(str).to_numpy()
    known = np.isin(truth, ref.obs["label"].astype(str).unique())
    novel = ~known
    out = {"n_ref": ref.n_obs, "n_query": query.n_obs, "n_novel": int(novel.sum()), "fit_s": fit_s}

    q = query[:, ref.var_names].copy()
    scnumap.tl.project(q, ref, obs="label")
    score = q.obs["numap_mapping_score"].to_numpy()
    label = q.obs["label_numap"].astype(str).to_numpy()
    unknown = label == "Unknown"
    q_open = query[:, ref.var_names].copy()
    scnumap.tl.project(
        q_open, ref, obs="label", unknown_threshold=None, anchor=None, recentre=False, place_by_label=False
    )
    label_open = q_open.obs["label_numap"].astype(str).to_numpy()

    Z = reference_pca(ref, query)
    baseline = knn_distance(ref, Z)
    sym_dist, sym_label = symphony(ref, query, symphony_k)
    if placement:
        sc.tl.umap(ref, random_state=0)
    q_ing = ingest(ref, query, embed=placement)
    q_ing_ref = ingest(ref, query, Z_query=Z, embed=placement)

    out.update(
        false_unknown=float(unknown[known].mean()),
        acc=float(np.mean(label[known] == truth[known])),
        acc_open=float(np.mean(label_open[known] == truth[known])),
        acc_ingest=float(np.mean(q_ing.obs["label"].astype(str).to_numpy()[known] == truth[known])),
        acc_ingest_ref=float(np.mean(q_ing_ref.obs["label"].astype(str).to_numpy()[known] == truth[known])),
        acc_symphony=float(np.mean(sym_label[known] == truth[known])),
        score_known=float(np.mean(score[known])),
    )
    if novel.any() and known.any():
        out.update(
            auroc=roc_auc_score(novel, 1.0 - score),
            auroc_symphony=roc_auc_score(novel, sym_dist),
            auroc_baseline=roc_auc_score(novel, baseline),
            auroc_oracle=roc_auc_score(novel, left_out_share(Z, novel)),
            tpr_unknown=float(unknown[novel].mean()),
            score_novel=float(np.mean(score[novel])),
        )
    if placement:
        anchored, free = q.obsm["X_numap"], q_open.obsm["X_numap"]
        q_dist = query[:, ref.var_names].copy()
        scnumap.tl.project(q_dist, ref, obs="label", place_by_label=False)
        flat = ref.copy()  # same PCA and graph, a map without the density term
        scnumap.tl.numap(flat, densmap=False, random_state=0, verbose=False)
        q_flat = query[:, ref.var_names].copy()
        scnumap.tl.project(q_flat, flat, obs="label")
        q_fixed = query[:, ref.var_names].copy()
        scnumap.tl.project(q_fixed, ref, obs="label", recentre=False)
        q_recentred = query[:, ref.var_names].copy()  # recentred, neither anchored nor placed by label
        scnumap.tl.project(q_recentred, ref, obs="label", anchor=None, place_by_label=False)
        out.update(
            knn_anchor=knn_2d(ref, "X_numap", anchored, truth, known),
            knn_free=knn_2d(ref, "X_numap", free, truth, known),
            knn_unrecentred=knn_2d(ref, "X_numap", q_fixed.obsm["X_numap"], truth, known),
            knn_distance_anchor=knn_2d(ref, "X_numap", q_dist.obsm["X_numap"], truth, known),
            moved_by_label=float(np.mean(np.any(anchored != q_dist.obsm["X_numap"], axis=1))),
            knn_ingest=knn_2d(ref, "X_umap", q_ing.obsm["X_umap"], truth, known),
            knn_ingest_ref=knn_2d(ref, "X_umap", q_ing_ref.obsm["X_umap"], truth, known),
            moved=float(np.mean(np.any(q_dist.obsm["X_numap"] != q_recentred.obsm["X_numap"], axis=1))),
            knn_flat=knn_2d(flat, "X_numap", q_flat.obsm["X_numap"], truth, known),
            separation=map_separation(ref, "X_numap"),
            separation_flat=map_separation(flat, "X_numap"),
            separation_umap=map_separation(ref, "X_umap"),
            knn_by_anchor=[anchor_knn(ref, query, anchor, truth, known) for anchor in ANCHORS],
        )
    return out


def anchor_knn(ref, query, anchor, truth: np.ndarray, known: np.ndarray) -> float:
    """2-D kNN accuracy of the query projected with ``anchor`` (without the placement by label)."""
    q = query[:, ref.var_names].copy()
    scnumap.tl.project(q, ref, obs="label", anchor=anchor, place_by_label=False)
    return knn_2d(ref, "X_numap", q.obsm["X_numap"], truth, known)


def placement_over_seeds(ref: anndata.AnnData, query: anndata.AnnData, n_comps: int, seeds) -> list[tuple]:
    """Part E: ``(seed, scnumap 2-D kNN, ingest 2-D kNN)`` for each seed of the two maps."""
    reference_graph(ref, n_comps)
    truth = query.obs["label"].astype(str).to_numpy()
    known = np.isin(truth, ref.obs["label"].astype(str).unique())
    rows = []
    for seed in seeds:
        fitted = ref.copy()
        scnumap.tl.numap(fitted, random_state=seed, verbose=False)
        q = query[:, fitted.var_names].copy()
        scnumap.tl.project(q, fitted, obs="label")
        sc.tl.umap(fitted, random_state=seed)
        q_ing = ingest(fitted, query, embed=True)
        rows.append(
            (
                seed,
                knn_2d(fitted, "X_numap", q.obsm["X_numap"], truth, known),
                knn_2d(fitted, "X_umap", q_ing.obsm["X_umap"], truth, known),
            )
        )
        log(f"    seed {seed}: 2-D kNN scnumap {rows[-1][1]:.3f}, ingest {rows[-1][2]:.3f}")
    return rows


def print_placement(rows: list[tuple[str, list[tuple]]]) -> None:
    print("### E. 2-D placement over seeds of the maps\n")
    print(
        "| pair | seeds | 2-D kNN scnumap per seed | 2-D kNN ingest UMAP per seed | scnumap mean (sd) "
        "| ingest mean (sd) | seeds with scnumap ≥ ingest |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        a, b = np.array([x[1] for x in r]), np.array([x[2] for x in r])
        print(
            f"| {name} | {len(r)} | {' / '.join(f'{v:.3f}' for v in a)} | {' / '.join(f'{v:.3f}' for v in b)} "
            f"| {a.mean():.4f} ({a.std(ddof=1) if len(a) > 1 else 0:.4f}) "
            f"| {b.mean():.4f} ({b.std(ddof=1) if len(b) > 1 else 0:.4f}) | {int(np.sum(a >= b))} of {len(r)} |",
            flush=True,
        )
    print()


def map_separation(ref: anndata.AnnData, key: str) -> float:
    """Leave-one-out accuracy of a 15-NN classifier among the reference's own 2-D
    coordinates: how cleanly the map separates the types, the bound of ``knn_2d``."""
    labels = ref.obs["label"].astype(str).to_numpy()
    coords = ref.obsm[key]
    neighbours = NearestNeighbors(n_neighbors=16).fit(coords).kneighbors(coords, return_distance=False)
    classes, codes = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(labels), len(classes)))
    np.add.at(counts, (np.repeat(np.arange(len(labels)), 15), codes[neighbours[:, 1:]].ravel()), 1.0)
    return float(np.mean(counts.argmax(axis=1) == codes))


class Largest:
    """The pair with the most query cells (for the timing, part D).

    ``make()`` returns its fitted reference and query: the objects themselves when the
    pair was fitted in this process, a refit (same seeds) when it came from the cache.
    """

    def __init__(self):
        self.name, self.n_query, self.make = None, -1, None

    def offer(self, name, n_query, make):
        if n_query > self.n_query:
            self.name, self.n_query, self.make = name, n_query, make


class Cache:
    """Finished pairs, one JSON line each, so that an interrupted run resumes where it stopped."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.done = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                entry = json.loads(line)
                self.done[entry["key"]] = entry["result"]

    def get(self, key: str) -> dict | None:
        return self.done.get(key)

    def put(self, key: str, result: dict) -> None:
        self.done[key] = result
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "result": result}, default=float) + "\n")


def leave_one_out(
    name, ref_all, query, *, n_comps, min_query, max_types, symphony_k, largest, cache, quick
) -> list[dict]:
    counts = query.obs["label"].astype(str).value_counts()
    types = [t for t, n in counts.items() if n >= min_query]
    if max_types is not None:
        types = types[:max_types]
    rows = []
    for i, left_out in enumerate(types):
        key = f"A|{name}|{left_out}|symphony_k={symphony_k}|quick={quick}|score=v4"
        pair = f"{name} without {left_out}"
        r = cache.get(key)

        def refit(left_out=left_out):
            ref = ref_all[ref_all.obs["label"].astype(str) != left_out].copy()
            fit_reference(ref, n_comps, quick)
            return ref, query

        if r is not None:
            log(f"A {name}: leaving out {left_out!r}: from the cache")
            largest.offer(pair, query.n_obs, refit)
        else:
            log(f"A {name}: leaving out {left_out!r} ({i + 1}/{len(types)}, {counts[left_out]} query cells)")
            ref = ref_all[ref_all.obs["label"].astype(str) != left_out].copy()
            r = map_pair(ref, query, n_comps=n_comps, symphony_k=symphony_k, quick=quick)
            r.update(set=name, left_out=left_out)
            cache.put(key, r)
            largest.offer(pair, query.n_obs, lambda ref=ref: (ref, query))
        log(
            f"    fit {r['fit_s']:.0f} s; AUROC scnumap {r['auroc']:.3f} Symphony {r['auroc_symphony']:.3f} "
            f"baseline {r['auroc_baseline']:.3f}; Unknown TPR {r['tpr_unknown']:.3f} false {r['false_unknown']:.3f}; "
            f"acc {r['acc']:.3f} ingest {r['acc_ingest']:.3f} Symphony {r['acc_symphony']:.3f}"
        )
        rows.append(r)
    return rows


def wang_xin_pair() -> tuple[anndata.AnnData, anndata.AnnData]:
    """Wang → Xin as ``datasets.py`` loads it, without the shipped embeddings and metadata."""
    ref, query = wang_xin()
    for a in (ref, query):
        a.obsm.clear()
        a.uns.clear()
    return ref, query


def labelled(name: str) -> anndata.AnnData:
    ad = LABELLED[name]()
    ad.obs["label"] = ad.obs["label"].astype(str)
    return ad


def shifted_pbmc4k(sigma: float, dropout: float, seed: int = 0) -> tuple[anndata.AnnData, anndata.AnnData]:
    """pbmc4k 70/30; the query's raw counts get gene-wise log-normal factors and thinning."""
    return shifted(SCDCC["pbmc4k"], sigma, dropout, seed)


def shifted(path: str, sigma: float, dropout: float, seed: int = 0) -> tuple[anndata.AnnData, anndata.AnnData]:
    """A raw-count set of ``SCDCC`` 70/30; the query's counts get gene-wise log-normal
    factors and thinning."""
    import h5py

    with h5py.File(SHARED / path, "r") as f:
        X = sp.csr_matrix(np.asarray(f["X"], dtype=np.float32))
        y = np.asarray(f["Y"]).astype(str)
    ad = anndata.AnnData(X)
    ad.var_names = [f"gene{i}" for i in range(ad.n_vars)]
    ad.obs["label"] = y
    ref, query = split(ad, seed)
    rng = np.random.default_rng(seed)
    factors = rng.lognormal(mean=0.0, sigma=sigma, size=query.n_vars)
    counts = sp.csr_matrix(query.X @ sp.diags(factors))
    counts.data = rng.binomial(np.rint(counts.data).astype(np.int64), 1.0 - dropout).astype(np.float32)
    counts.eliminate_zeros()
    query.X = counts
    for a in (ref, query):
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    return ref, query


def speed(ref: anndata.AnnData, query: anndata.AnnData, repeats: int = 5) -> tuple[float, float]:
    """Best-of-``repeats`` warm µs/cell of tl.project (labels + score) and ingest (labels + UMAP)."""
    if "X_umap" not in ref.obsm:
        sc.tl.umap(ref, random_state=0)
    q = query[:, ref.var_names].copy()
    scnumap.tl.project(q[:10].copy(), ref, obs="label")  # warm-up: builds the reference index
    sc.tl.ingest(q[:10].copy(), ref, obs="label")  # warm-up: numba
    t_numap, t_ingest = [], []
    for _ in range(repeats):
        a = q.copy()
        t0 = time.perf_counter()
        scnumap.tl.project(a, ref, obs="label")
        t_numap.append(time.perf_counter() - t0)
        b = q.copy()
        t0 = time.perf_counter()
        sc.tl.ingest(b, ref, obs="label")
        t_ingest.append(time.perf_counter() - t0)
    return min(t_numap) / q.n_obs * 1e6, min(t_ingest) / q.n_obs * 1e6


def f3(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def print_loto(rows: list[dict]) -> None:
    print("### A. Leave one type out: per left-out type\n")
    print(
        "| set | left out | ref → query (left out) | AUROC scnumap | AUROC Symphony | AUROC kNN-distance "
        "| AUROC labels known | Unknown TPR | false Unknown | acc scnumap | acc scnumap, no Unknown | acc ingest "
        "| acc ingest (ref mean) | acc Symphony | mean score, known / left out | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['left_out']} | {r['n_ref']} → {r['n_query']} ({r['n_novel']}) | {f3(r['auroc'])} "
            f"| {f3(r['auroc_symphony'])} | {f3(r['auroc_baseline'])} | {f3(r['auroc_oracle'])} "
            f"| {f3(r['tpr_unknown'])} "
            f"| {f3(r['false_unknown'])} | {f3(r['acc'])} | {f3(r['acc_open'])} | {f3(r['acc_ingest'])} "
            f"| {f3(r['acc_ingest_ref'])} | {f3(r['acc_symphony'])} | {f3(r['score_known'])} / {f3(r['score_novel'])} "
            f"| {r['fit_s']:.0f} |"
        )
    print()
    print("### A. Leave one type out: per set, mean (min; for false Unknown: max)\n")
    print(
        "| set | types | AUROC scnumap | AUROC Symphony | AUROC kNN-distance | AUROC labels known | Unknown TPR "
        "| false Unknown | acc scnumap | acc ingest | acc ingest (ref mean) | acc Symphony |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    frame = pd.DataFrame(rows)
    groups = [(name, frame[frame["set"] == name]) for name in dict.fromkeys(frame["set"])]
    groups.append(("**all left-out types**", frame))
    for name, g in groups:

        def cell(col, worst=min, g=g):
            return f"{g[col].mean():.3f} ({worst(g[col]):.3f})"

        print(
            f"| {name} | {len(g)} | {cell('auroc')} | {cell('auroc_symphony')} | {cell('auroc_baseline')} "
            f"| {cell('auroc_oracle')} | {cell('tpr_unknown')} | {cell('false_unknown', max)} | {cell('acc')} "
            f"| {cell('acc_ingest')} | {cell('acc_ingest_ref')} | {cell('acc_symphony')} |"
        )
    print(flush=True)


def print_cross(rows: list[tuple[str, dict]]) -> None:
    print("### B, C. Cross-batch pairs, all types in the reference\n")
    print(
        "| pair | ref → query | acc scnumap | acc scnumap, no Unknown | acc ingest | acc ingest (ref mean) "
        "| acc Symphony | false Unknown | mean score | 2-D kNN scnumap (default: recentred, anchor=2.0, by label) "
        "| 2-D kNN scnumap, default not recentred | 2-D kNN scnumap recentred + anchor=2.0 "
        "| 2-D kNN scnumap network alone "
        "| 2-D kNN ingest UMAP | 2-D kNN ingest UMAP (ref mean) | share moved by the anchor | share moved by label "
        "| fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['n_ref']} → {r['n_query']} | {f3(r['acc'])} | {f3(r['acc_open'])} "
            f"| {f3(r['acc_ingest'])} | {f3(r['acc_ingest_ref'])} | {f3(r['acc_symphony'])} "
            f"| {f3(r['false_unknown'])} | {f3(r['score_known'])} | {f3(r['knn_anchor'])} "
            f"| {f3(r.get('knn_unrecentred'))} | {f3(r.get('knn_distance_anchor'))} | {f3(r['knn_free'])} "
            f"| {f3(r['knn_ingest'])} | {f3(r['knn_ingest_ref'])} | {f3(r['moved'])} | {f3(r.get('moved_by_label'))} "
            f"| {r['fit_s']:.0f} |"
        )
    print()
    print("### B, C. 2-D placement against the map's own separation\n")
    print(
        "| pair | query 2-D kNN, scnumap (DensMAP) | map separation, scnumap (DensMAP) "
        "| query 2-D kNN, scnumap densmap=False | map separation, scnumap densmap=False "
        "| query 2-D kNN, ingest UMAP | map separation, UMAP |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {f3(r.get('knn_anchor'))} | {f3(r.get('separation'))} | {f3(r.get('knn_flat'))} "
            f"| {f3(r.get('separation_flat'))} | {f3(r.get('knn_ingest'))} | {f3(r.get('separation_umap'))} |"
        )
    print()
    print("### B, C. 2-D kNN accuracy of the projected query by `anchor` (recentred), without the placement by label\n")
    print("| pair | " + " | ".join(f"anchor={a}" for a in ANCHORS) + " | ingest UMAP |")
    print("|---|" + "---|" * (len(ANCHORS) + 1))
    for name, r in rows:
        sweep = r.get("knn_by_anchor") or [None] * len(ANCHORS)
        print(f"| {name} | " + " | ".join(f3(v) for v in sweep) + f" | {f3(r.get('knn_ingest'))} |")
    print(flush=True)


def print_header(command: str, args, argv) -> None:
    """Set ``--torch-threads``; print the date, machine, threads, versions and the command
    (without ``--cache FILE``)."""
    from importlib.metadata import version

    import torch

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}: "
        f"{torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, scanpy {sc.__version__}, scnumap {scnumap.__version__}, "
        f"symphonypy {version('symphonypy')}, harmonypy {version('harmonypy')}\n"
    )
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--cache", args.cache)]
    print(f"`{command} {' '.join(shown)}`\n", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="*", default=SETS, choices=sorted(LABELLED), help="labelled sets for part A")
    parser.add_argument("--max-types", type=int, default=None, help="at most this many left-out types per set")
    parser.add_argument("--min-query", type=int, default=30, help="query cells a type needs to be left out")
    parser.add_argument("--sigma", type=float, default=0.5, help="sd of the log-normal gene factors (part C)")
    parser.add_argument("--dropout", type=float, default=0.3, help="share of counts thinned away (part C)")
    parser.add_argument(
        "--shift-sets", nargs="*", default=["pbmc4k"], choices=sorted(SCDCC), help="raw-count sets shifted in part C"
    )
    parser.add_argument("--symphony-k", type=int, default=5, help="neighbours of Symphony's kNN labels")
    parser.add_argument("--cache", default=None, help="JSON-lines file of finished pairs; a rerun skips them")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--parts", nargs="*", default=list("ABCD"), choices=list("ABCDE"))
    parser.add_argument("--placement-seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4], help="seeds of part E")
    parser.add_argument(
        "--full-fits-a", action="store_true", help="part A with full NUMAP fits (default: short ones, same measures)"
    )
    args = parser.parse_args(argv)

    print_header("benchmarks/mapping.py", args, argv)
    opts = {
        "min_query": args.min_query,
        "max_types": args.max_types,
        "symphony_k": args.symphony_k,
        "quick": not args.full_fits_a,
    }
    largest, cache = Largest(), Cache(args.cache)
    loto, cross = [], []
    if "A" in args.parts:
        for name in args.sets:
            log(f"A {name}: loading")
            ref_all, query = split(labelled(name), seed=0)
            loto += leave_one_out(name, ref_all, query, n_comps=50, largest=largest, cache=cache, **opts)
    if "B" in args.parts:
        log("B Wang → Xin: all types")
        ref, query = wang_xin_pair()
        key = f"B|wang_xin|symphony_k={args.symphony_k}|score=v3|placement=v5"
        r = cache.get(key)
        if r is None:
            r = map_pair(ref.copy(), query, n_comps=30, symphony_k=args.symphony_k, placement=True)
            cache.put(key, r)
        cross.append(("Wang → Xin (pancreas, cross-technology)", r))
        log(f"    {r}")
        loto += leave_one_out("Wang → Xin", ref, query, n_comps=30, largest=largest, cache=cache, **opts)
    for set_name in args.shift_sets if "C" in args.parts else ():
        log(f"C {set_name}, synthetic shift (sigma {args.sigma}, dropout {args.dropout})")
        ref, query = shifted(SCDCC[set_name], args.sigma, args.dropout)
        name = f"{set_name} 70/30, query shifted (log-normal σ {args.sigma}, dropout {args.dropout})"
        key = (
            f"C|{set_name}|sigma={args.sigma}|dropout={args.dropout}|symphony_k={args.symphony_k}|score=v3|placement=v5"
        )
        r = cache.get(key)
        fitted = r is None
        if fitted:
            r = map_pair(ref, query, n_comps=50, symphony_k=args.symphony_k, placement=True)
            cache.put(key, r)

        def shifted_pair(ref=ref, query=query, fitted=fitted):
            if not fitted:
                fit_reference(ref, 50)
            return ref, query

        largest.offer(name, query.n_obs, shifted_pair)
        cross.append((name, r))
        log(f"    {r}")
    if loto:
        print_loto(loto)
    if cross:
        print_cross(cross)
    if "E" in args.parts:
        placed = []
        log("E Wang → Xin over seeds")
        ref, query = wang_xin_pair()
        placed.append(("Wang → Xin", placement_over_seeds(ref, query, 30, args.placement_seeds)))
        for set_name in args.shift_sets:
            log(f"E {set_name} shifted over seeds")
            ref, query = shifted(SCDCC[set_name], args.sigma, args.dropout)
            name = f"{set_name} shifted (σ {args.sigma}, dropout {args.dropout})"
            placed.append((name, placement_over_seeds(ref, query, 50, args.placement_seeds)))
        print_placement(placed)
    if "D" in args.parts and largest.make is not None:
        log(f"D timing on {largest.name}")
        ref, query = largest.make()
        numap_us, ingest_us = speed(ref, query)
        print("### D. Speed, warm, best of 5\n")
        print(
            "| pair | ref → query | tl.project (labels, score, placement) µs/cell "
            "| sc.tl.ingest (labels, UMAP) µs/cell | speed-up |"
        )
        print("|---|---|---|---|---|")
        print(
            f"| {largest.name} | {ref.n_obs} → {query.n_obs} | {numap_us:.1f} | {ingest_us:.1f} "
            f"| {ingest_us / numap_us:.0f}× |",
            flush=True,
        )
    log("done")


if __name__ == "__main__":
    main()
