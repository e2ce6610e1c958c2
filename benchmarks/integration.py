"""Integrated references: map queries onto Harmony-integrated references, next to Symphony and ingest.

    .venv/bin/python -u benchmarks/integration.py [--pairs wang_xin kang pbmc4k] [--sigma 0.5] [--dropout 0.3]
        [--ref-sigma S] [--ref-dropout D] [--symphony-k 5] [--seeds 0 1 2 3 4] [--map-seeds 0 1 2 3 4]
        [--quick] [--no-speed]
        [--scale] [--scale-n 1000000] [--scale-symphony 100000]
        [--torch-threads N] [--cache FILE]

Needs the ``benchmark`` extra (``pip install -e '.[benchmark]'``: symphonypy, harmonypy).
Progress goes to stderr, the markdown tables to stdout. With ``--cache FILE`` every
finished pair is appended to ``FILE`` (JSON lines) and a rerun with the same options takes
it from there instead of fitting it again (all fits are seeded, so the numbers are the
same); the timings are always measured in the run that prints them (a cached pair (c) is
refitted for them).

Preprocessing is the same for every method: counts → ``normalize_total(1e4)`` → ``log1p``
(per cell) → ``sc.pp.pca`` on the **reference** (50 components; Wang → Xin: log-normalised
as shipped, 30 components, as ``datasets.py`` loads it) → ``sc.pp.neighbors(n_neighbors=15)``.

Pairs
-----
a. Wang → Xin (pancreas, Fluidigm C1 → SMARTer, 501 → 674 cells, labelled). The reference
   is one study with no donor or batch column, so ``batch_key`` names a column with a
   single value: ``scnumap.tl.numap`` accepts it (it warns that Harmony only clusters the
   PCA: ``X_pca_harmony`` = ``X_pca``, and the soft clusters are kept), and the query is
   still corrected by Symphony's mixture of experts (its batch terms are fitted on the
   query). symphonypy gets the same one-batch reference.
b. Kang PBMC, control → IFN-β stimulated (1000 → 1000 cells, 2000 reference HVGs; one
   batch in the reference). No cell-type labels: mixing only. The stimulation is a real
   biological shift, but cell types are shared; this is the pair of Harmony's and
   Seurat's integration vignettes, where the two conditions are meant to overlap.
c. Controlled multi-batch shift: pbmc4k raw counts split 70/30 by cells (seed 0, ``split``
   of ``mapping.py``). The 70 % reference is split at random into two halves; the second
   half's counts get gene-wise log-normal factors (``--ref-sigma``, default ``--sigma``),
   are rounded and binomially thinned (each count kept with probability
   ``1 - --ref-dropout``, default ``--dropout``) → a 2-batch reference (``obs['batch']``).
   The 30 % query gets **another** independent shift of the same kind (``--sigma`` 0.5,
   ``--dropout`` 0.3; the effect size is the knob). Normalisation after the shifts.
c′. Control: pair (c)'s reference and fits, with the same query cells **not** shifted:
   what each measure reads when there is no query shift, the ceiling to read (c) against.
   It matters for the mixing in the 50-PC space: cells projected into a PCA fitted on
   other cells sit closer to the centre than the cells it was fitted on (the reference's
   own noise is in its PCs), so even an unshifted held-out query mixes well below 1 there.
d. A real multi-batch labelled reference: none of the sets in ``benchmarks/datasets.py``
   or the project's shared data has one (every set is one study, one technology and
   carries no donor/batch column; Kang has no cell-type labels), so this pair is absent.

Methods
-------
* scnumap, corrected: ``scnumap.tl.numap(ref, batch_key='batch', random_state=0)``
  (Harmony on the reference PCA → ``X_pca_harmony``, graph rebuilt there, Symphony's
  compression stored), then ``scnumap.tl.project(query, ref, obs='label')`` (genes →
  reference PCs → Symphony's correction → ``X_pca_harmony`` → network, labels by a
  distance-weighted 15-NN vote, mapping score, anchored placement ``anchor=2.0``).
* scnumap, plain: the graph on ``X_pca`` and ``scnumap.tl.numap(ref, random_state=0)``;
  ``tl.project`` puts the query in the reference PCA (reference gene means and
  loadings) without correction.
* ingest: ``sc.tl.umap(ref)`` on the plain graph, then ``sc.tl.ingest(query, ref,
  obs='label', embedding_method='umap')`` as users call it (it centres the query on the
  **query's** own gene means: a crude mean correction).
* Symphony (symphonypy): the reference gets ``var['mean']`` = its gene means and
  ``var['std']`` = 1 (so the query lands in the same unscaled PCA, see ``mapping.py``),
  ``symphonypy.pp.harmony_integrate(ref, key='batch', random_seed=0)``,
  ``symphonypy.tl.map_embedding(query, ref, use_genes_column=None)`` and
  ``symphonypy.tl.transfer_labels_kNN`` (``--symphony-k`` neighbours, default 5) in
  ``X_pca_harmony``. Its 2-D placement is symphonypy's own route: ``sc.pp.neighbors`` and
  ``sc.tl.umap`` on the reference's ``X_pca_harmony``, then ``symphonypy.tl.ingest(query,
  ref, use_rep='X_pca_harmony')``. symphonypy clips the centred query values at 10
  (``_map_query_to_ref``'s ``max_value``); only the pancreas log values (max ≈ 18) reach
  it: 164 of the 674 Xin cells have a gene above it, which moves their reference-PCA
  coordinates by up to 1.6. Given the same input and compression, scnumap's correction
  and symphonypy's agree to 1e-5.

The two Harmony runs (scnumap's and symphonypy's) use the same harmonypy defaults
(``sigma`` 0.1, K = min(100, N/30)) but their own seeds (scnumap derives harmonypy's seed
from ``random_state``), so their soft clusters, hence their query corrections, differ;
with one reference batch ``X_pca_harmony`` = ``X_pca`` for both, and only the clusters
differ. The seed table shows how much that moves the labels.

Measures (per pair and method)
------------------------------
* Labels: accuracy on the query (every query type is in the reference in these pairs).
  scnumap: the default call (cells with mapping score < 0.015 are "Unknown", counted as
  wrong) and the same call with ``unknown_threshold=None``; its share of Unknown and mean
  mapping score are in the same table. "2-D kNN": a 15-NN classifier fitted on the
  reference's 2-D coordinates and labels predicts each query cell at its projected
  coordinates (``knn_2d`` of ``mapping.py``).
* Mixing, in the method's search space (scnumap corrected and Symphony: ``X_pca_harmony``;
  scnumap plain: the reference PCA, i.e. no correction; ingest: its query-centred PCA)
  and in its 2-D embedding (NUMAP, or UMAP for ingest and Symphony): reference and
  query cells are pooled; for each query cell, the share of reference cells among its 30
  nearest pooled neighbours (itself excluded), divided by the expected share
  n_ref / (n_ref + n_query); mean over query cells. 1 = the query's neighbourhoods hold
  reference cells in the global proportion; near 0 = query cells sit among query cells
  only. Where query and reference differ in type composition (Wang → Xin), even perfect
  integration lands off 1: compare methods, not the value with 1.
* Type separation kept: kNN purity in the same pooled spaces: the share of a cell's 30
  nearest pooled neighbours (itself excluded) with the cell's label (reference labels
  for reference cells, true labels for query cells). "query" = mean over query cells (the
  sensitive one: a correction that mixes types lowers it; no mixing at all keeps it high,
  so read it next to the mixing), "all" = mean over all pooled cells. Chosen over cLISI:
  same information for a fixed k, simpler to read.
* Seed sensitivity (``--seeds``, default 0–4; labelled pairs): query label accuracy (no
  Unknown) of scnumap's correction (``tl.numap(batch_key='batch', random_state=s)``, short
  fit: the labels are voted in ``X_pca_harmony``, which does not depend on the network)
  and of Symphony's (``harmony_integrate(random_seed=s)``) for each seed.
* ``--map-seeds`` (default none): the 2-D query–reference mixing (as above) for each seed
  of the **map**: scnumap's corrected reference fitted anew with ``random_state=s`` and
  Symphony's Harmony and UMAP with seed ``s``, each query mapped onto its own map. One fit
  per method is one draw of the map's layout; the mean over seeds compares the methods.
* Reference batches (pair (c) only; "–" for a 1-batch reference): for each reference
  cell, the share of other-batch cells among its 30 nearest reference cells ÷ the other
  batches' share of the other reference cells (1 = mixed), in ``X_pca`` and in each
  method's ``X_pca_harmony``: whether the reference itself was integrated.
* Speed on pair (c), warm (the reference's index built by a first call), best of 3, µs
  per query cell: ``scnumap.tl.project(obs='label')`` on the corrected reference
  (correction, labels, mapping score, 2-D placement) and on the plain one, against
  ``symphonypy.tl.map_embedding`` + ``transfer_labels_kNN`` (correction and labels, no
  2-D placement, no score).
* ``--scale``: seconds for ``--scale-n`` (1,000,000) query cells onto pair (c)'s corrected
  reference. The query is synthetic, in gene space: rows of pair (c)'s normalised query
  resampled with replacement, each non-zero value multiplied by exp(N(0, 0.1²)) (sparse
  CSR, about 160 non-zeros per cell: about 1.3 GB at 1M). ``tl.project`` reads it in blocks
  of 50,000 rows, in two passes (the first sums the correction's regression terms, the
  second corrects and maps) plus a 20,000-row sample for the mapping score's query share;
  one warm call (the reference index is already built). symphonypy's ``map_embedding`` densifies the whole query
  (1M × 2000 genes: 8 GB in float32, more in float64), too much for this machine, and its
  correction needs all rows at once; it is timed on the first ``--scale-symphony``
  (100,000) rows and that time is scaled linearly (marked as extrapolated).

``--quick``: at most ``--quick-cells`` (600) reference and query cells per pair (seeded
subsample) and short NUMAP fits (``epochs=5, grease_steps=100``): a smoke run, not
numbers to quote. Full runs use scnumap's defaults. Every fit is seeded (``random_state=0``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import anndata
import h5py
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from datasets import SCDCC, SHARED, kang, wang_xin
from mapping import Cache, f3, knn_2d, log, print_header, reference_pca, split
from sklearn.neighbors import NearestNeighbors

import scnumap

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0

PAIRS = ["wang_xin", "kang", "pbmc4k"]
METHODS = ["scnumap, corrected", "scnumap, plain", "ingest", "Symphony"]
#: The ``--quick`` NUMAP fit.
QUICK_FIT = {"epochs": 5, "grease_steps": 100}
#: Pooled neighbours of the mixing and purity measures.
K_POOLED = 30
RUN_START = time.perf_counter()


def shift_counts(X: sp.csr_matrix, sigma: float, dropout: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Gene-wise log-normal factors (rounded) then binomial thinning of raw counts."""
    factors = rng.lognormal(mean=0.0, sigma=sigma, size=X.shape[1])
    counts = sp.csr_matrix(X @ sp.diags(factors))
    counts.data = rng.binomial(np.rint(counts.data).astype(np.int64), 1.0 - dropout).astype(np.float32)
    counts.eliminate_zeros()
    return counts


def normalise(ad: anndata.AnnData) -> None:
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)


def pbmc4k_batches(
    sigma: float, dropout: float, ref_sigma: float, ref_dropout: float, seed: int = 0
) -> tuple[anndata.AnnData, anndata.AnnData, anndata.AnnData]:
    """Pair (c): a 2-batch pbmc4k reference (second half shifted), an independently shifted query, and
    the same query cells unshifted (the control)."""
    with h5py.File(SHARED / SCDCC["pbmc4k"], "r") as f:
        X = sp.csr_matrix(np.asarray(f["X"], dtype=np.float32))
        y = np.asarray(f["Y"]).astype(str)
    ad = anndata.AnnData(X)
    ad.var_names = [f"gene{i}" for i in range(ad.n_vars)]
    ad.obs_names = [f"cell{i}" for i in range(ad.n_obs)]
    ad.obs["label"] = y
    ref, query = split(ad, seed)
    rng_halves, rng_ref, rng_query = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    second = np.zeros(ref.n_obs, dtype=bool)
    second[rng_halves.permutation(ref.n_obs)[ref.n_obs // 2 :]] = True
    counts = sp.csr_matrix(ref.X, dtype=np.float32)
    stacked = sp.vstack([counts[~second], shift_counts(counts[second], ref_sigma, ref_dropout, rng_ref)]).tocsr()
    order = np.r_[np.flatnonzero(~second), np.flatnonzero(second)]  # stacked row j is reference row order[j]
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    ref.X = stacked[back]
    ref.obs["batch"] = np.where(second, "ref-b (shifted)", "ref-a")
    control = query.copy()
    query.X = shift_counts(sp.csr_matrix(query.X, dtype=np.float32), sigma, dropout, rng_query)
    for a in (ref, query, control):
        normalise(a)
    return ref, query, control


def load_pair(name: str, args) -> tuple[str, anndata.AnnData, anndata.AnnData, int, anndata.AnnData | None]:
    """The pair's title, normalised reference (with ``obs['batch']``) and query, its PCA width, and
    the unshifted control query (pair (c) only, else None)."""
    control = None
    if name == "wang_xin":
        ref, query = wang_xin()
        ref.obs["batch"] = ref.obs["study"].astype(str)  # one study: one batch
        title, n_comps = "(a) Wang → Xin (pancreas, cross-technology; 1-batch reference)", 30
    elif name == "kang":
        ref, query = kang()
        ref.obs["batch"] = "ctrl"  # no donor column: one batch
        title, n_comps = "(b) Kang ctrl → stim (PBMC, IFN-β; 1-batch reference; no labels)", 50
    else:
        ref_sigma = args.sigma if args.ref_sigma is None else args.ref_sigma
        ref_dropout = args.dropout if args.ref_dropout is None else args.ref_dropout
        ref, query, control = pbmc4k_batches(args.sigma, args.dropout, ref_sigma, ref_dropout)
        title = (
            f"(c) pbmc4k 70/30, 2-batch reference (half shifted σ {ref_sigma}, dropout {ref_dropout}), "
            f"query shifted (σ {args.sigma}, dropout {args.dropout})"
        )
        n_comps = 50
    if args.quick:
        ref, query = subsample(ref, args.quick_cells, 1), subsample(query, args.quick_cells, 2)
        control = None if control is None else subsample(control, args.quick_cells, 2)  # the same cells
    for a in (ref, query) if control is None else (ref, query, control):
        a.obsm.clear()
        a.varm.clear()
        a.obsp.clear()
        a.uns.clear()
        if "label" in a.obs:
            a.obs["label"] = a.obs["label"].astype(str)
    return title, ref, query, n_comps, control


def subsample(ad: anndata.AnnData, n: int, seed: int) -> anndata.AnnData:
    if ad.n_obs <= n:
        return ad
    return ad[np.sort(np.random.default_rng(seed).choice(ad.n_obs, n, replace=False))].copy()


def prepare(ref: anndata.AnnData, n_comps: int) -> None:
    """The reference PCA and graph every method starts from (in place; once)."""
    if "X_pca" not in ref.obsm:
        sc.pp.pca(ref, n_comps=min(n_comps, ref.n_vars - 1, ref.n_obs - 1), random_state=0)
        sc.pp.neighbors(ref, n_neighbors=15, random_state=0)


def fit_references(ref: anndata.AnnData, n_comps: int, quick: bool) -> dict:
    """The four methods' references from one PCA and graph; fit seconds of the two NUMAP fits."""
    fit = QUICK_FIT if quick else {}
    prepare(ref, n_comps)
    corrected = ref.copy()
    t0 = time.perf_counter()
    scnumap.tl.numap(corrected, batch_key="batch", random_state=0, verbose=False, **fit)
    fit_corrected = time.perf_counter() - t0
    log(f"    scnumap fit with correction: {fit_corrected:.0f} s")
    plain = ref.copy()
    t0 = time.perf_counter()
    scnumap.tl.numap(plain, random_state=0, verbose=False, **fit)
    fit_plain = time.perf_counter() - t0
    log(f"    scnumap fit without correction: {fit_plain:.0f} s")
    sc.tl.umap(plain, random_state=0)  # ingest's UMAP on the plain graph
    return {
        "corrected": corrected,
        "plain": plain,
        "symphony": symphony_reference(ref),
        "fit_corrected": fit_corrected,
        "fit_plain": fit_plain,
    }


def symphony_reference(ref: anndata.AnnData, seed: int = 0, umap: bool = True) -> anndata.AnnData:
    """symphonypy's reference: Harmony over ``obs['batch']``, and a UMAP on ``X_pca_harmony``
    (Harmony, graph and UMAP seeded with ``seed``)."""
    import symphonypy

    r = ref.copy()
    r.var["mean"] = np.asarray(r.X.mean(axis=0)).ravel().astype(np.float64)
    r.var["std"] = 1.0
    symphonypy.pp.harmony_integrate(r, key="batch", random_seed=seed)
    if umap:
        sc.pp.neighbors(r, use_rep="X_pca_harmony", n_neighbors=15, random_state=seed)
        sc.tl.umap(r, random_state=seed)
    return r


def symphony_map(ref_sym: anndata.AnnData, query: anndata.AnnData, k: int, labels: bool) -> anndata.AnnData:
    """symphonypy's correction (and kNN labels) of the query."""
    import symphonypy

    q = query[:, ref_sym.var_names].copy()
    q.uns["log1p"] = {"base": None}
    symphonypy.tl.map_embedding(q, ref_sym, use_genes_column=None)
    if labels:
        symphonypy.tl.transfer_labels_kNN(q, ref_sym, "label", query_labels="label_symphony", n_neighbors=k)
    return q


def pooled(ref_coords, query_coords, ref_labels=None, query_labels=None, k: int = K_POOLED) -> dict:
    """Mixing (query cells) and kNN purity (query / all cells) among the k nearest pooled neighbours."""
    X = np.vstack([np.asarray(ref_coords, dtype=np.float64), np.asarray(query_coords, dtype=np.float64)])
    n_ref, n_query = len(ref_coords), len(query_coords)
    is_ref = np.r_[np.ones(n_ref, dtype=bool), np.zeros(n_query, dtype=bool)]
    idx = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(return_distance=False)  # itself excluded
    out = {"mixing": float(is_ref[idx[n_ref:]].mean(axis=1).mean() / (n_ref / (n_ref + n_query)))}
    if ref_labels is not None and query_labels is not None:
        lab = np.r_[np.asarray(ref_labels, dtype=str), np.asarray(query_labels, dtype=str)]
        same = (lab[idx] == lab[:, None]).mean(axis=1)
        out.update(purity_query=float(same[n_ref:].mean()), purity_all=float(same.mean()))
    return out


def batch_mixing(coords, batches, k: int = K_POOLED) -> float | None:
    """Reference batches: share of other-batch cells among a cell's k neighbours ÷ their share of the other cells."""
    batches = np.asarray(batches, dtype=str)
    names, codes = np.unique(batches, return_inverse=True)
    if len(names) < 2:
        return None
    idx = NearestNeighbors(n_neighbors=k).fit(np.asarray(coords, dtype=np.float64)).kneighbors(return_distance=False)
    observed = (codes[idx] != codes[:, None]).mean(axis=1)
    counts = np.bincount(codes)
    expected = (len(codes) - counts[codes]) / (len(codes) - 1)
    return float(np.mean(observed / expected))


def measure(refs: dict, query: anndata.AnnData, symphony_k: int) -> dict:
    """Map the query with every method; return labels, mixing and purity measures."""
    ref_c, ref_p, ref_s = refs["corrected"], refs["plain"], refs["symphony"]
    labelled = "label" in query.obs and "label" in ref_c.obs
    obs = "label" if labelled else None
    truth = query.obs["label"].astype(str).to_numpy() if labelled else None
    out = {
        "n_ref": ref_c.n_obs,
        "n_query": query.n_obs,
        "n_batches": int(ref_c.obs["batch"].nunique()),
        "fit_corrected": refs["fit_corrected"],
        "fit_plain": refs["fit_plain"],
        "ref_mixing_pca": batch_mixing(ref_p.obsm["X_pca"], ref_p.obs["batch"]),
        "ref_mixing_corrected": batch_mixing(ref_c.obsm["X_pca_harmony"], ref_c.obs["batch"]),
        "ref_mixing_symphony": batch_mixing(ref_s.obsm["X_pca_harmony"], ref_s.obs["batch"]),
    }
    spaces = {}

    for tag, ref in (("corrected", ref_c), ("plain", ref_p)):
        q = query[:, ref.var_names].copy()
        scnumap.tl.project(q, ref, obs=obs)
        score = q.obs["numap_mapping_score"].to_numpy()
        out[f"score_{tag}"] = float(score.mean())
        if tag == "corrected":
            search = (ref.obsm["X_pca_harmony"], q.obsm["X_pca_harmony"])
        else:
            search = (ref.obsm["X_pca"], reference_pca(ref, query))
        spaces[tag] = {"search": search, "2-D": (ref.obsm["X_numap"], q.obsm["X_numap"])}
        if labelled:
            label = q.obs["label_numap"].astype(str).to_numpy()
            out[f"unknown_{tag}"] = float(np.mean(label == "Unknown"))
            out[f"acc_{tag}"] = float(np.mean(label == truth))
            q_open = query[:, ref.var_names].copy()
            scnumap.tl.project(q_open, ref, obs=obs, unknown_threshold=None)
            out[f"acc_open_{tag}"] = float(np.mean(q_open.obs["label_numap"].astype(str).to_numpy() == truth))
            out[f"knn2d_{tag}"] = knn_2d(ref, "X_numap", q.obsm["X_numap"], truth, np.ones(len(truth), dtype=bool))
        if tag == "corrected":  # the same projection without recentring (tl.project's recentre=False)
            q_fixed = query[:, ref.var_names].copy()
            scnumap.tl.project(q_fixed, ref, obs=obs, recentre=False)
            spaces["unrecentred"] = {"2-D": (ref.obsm["X_numap"], q_fixed.obsm["X_numap"])}
            if labelled:
                out["knn2d_unrecentred"] = knn_2d(
                    ref, "X_numap", q_fixed.obsm["X_numap"], truth, np.ones(len(truth), dtype=bool)
                )

    q = query[:, ref_p.var_names].copy()
    sc.tl.ingest(q, ref_p, obs=obs, embedding_method="umap")
    spaces["ingest"] = {
        "search": (ref_p.obsm["X_pca"][:, : q.obsm["rep"].shape[1]], q.obsm["rep"]),
        "2-D": (ref_p.obsm["X_umap"], q.obsm["X_umap"]),
    }
    if labelled:
        out["acc_ingest"] = float(np.mean(q.obs["label"].astype(str).to_numpy() == truth))
        out["knn2d_ingest"] = knn_2d(ref_p, "X_umap", q.obsm["X_umap"], truth, np.ones(len(truth), dtype=bool))

    import symphonypy

    q = symphony_map(ref_s, query, symphony_k, labelled)
    symphonypy.tl.ingest(q, ref_s, embedding_method="umap", use_rep="X_pca_harmony")
    spaces["symphony"] = {
        "search": (ref_s.obsm["X_pca_harmony"], q.obsm["X_pca_harmony"]),
        "2-D": (ref_s.obsm["X_umap"], q.obsm["X_umap"]),
    }
    if labelled:
        out["acc_symphony"] = float(np.mean(q.obs["label_symphony"].astype(str).to_numpy() == truth))
        out["knn2d_symphony"] = knn_2d(ref_s, "X_umap", q.obsm["X_umap"], truth, np.ones(len(truth), dtype=bool))

    ref_labels = ref_c.obs["label"].astype(str).to_numpy() if labelled else None
    for tag, by_space in spaces.items():
        for space, (R, Q) in by_space.items():
            for measure_name, value in pooled(R, Q, ref_labels, truth).items():
                out[f"{measure_name}_{tag}_{space}"] = value
    return out


def seed_sweep(ref: anndata.AnnData, query: anndata.AnnData, n_comps: int, seeds, symphony_k: int) -> dict:
    """Label accuracy (no Unknown) of both corrections for several Harmony seeds (short NUMAP fits)."""
    prepare(ref, n_comps)
    truth = query.obs["label"].astype(str).to_numpy()
    out = {"seeds": [int(s) for s in seeds], "scnumap": [], "symphony": []}
    for seed in seeds:
        r = ref.copy()
        scnumap.tl.numap(r, batch_key="batch", random_state=int(seed), verbose=False, **QUICK_FIT)
        q = query[:, r.var_names].copy()
        scnumap.tl.project(q, r, obs="label", unknown_threshold=None)
        out["scnumap"].append(float(np.mean(q.obs["label_numap"].astype(str).to_numpy() == truth)))
        qs = symphony_map(symphony_reference(ref, int(seed), umap=False), query, symphony_k, True)
        out["symphony"].append(float(np.mean(qs.obs["label_symphony"].astype(str).to_numpy() == truth)))
        log(f"    seed {seed}: scnumap {out['scnumap'][-1]:.3f}, Symphony {out['symphony'][-1]:.3f}")
    return out


def speed(refs: dict, query: anndata.AnnData, symphony_k: int, repeats: int = 3) -> dict:
    """Best-of-``repeats`` warm µs per query cell: tl.project (corrected, plain) and symphonypy."""
    q = query[:, refs["corrected"].var_names].copy()
    for ref in (refs["corrected"], refs["plain"]):
        scnumap.tl.project(q[:100].copy(), ref, obs="label")  # warm-up: builds the reference index
    symphony_map(refs["symphony"], q[:100], symphony_k, True)
    times = {"corrected": [], "plain": [], "symphony": []}
    for _ in range(repeats):
        for tag in ("corrected", "plain"):
            a = q.copy()
            t0 = time.perf_counter()
            scnumap.tl.project(a, refs[tag], obs="label")
            times[tag].append(time.perf_counter() - t0)
        b = q.copy()
        t0 = time.perf_counter()
        symphony_map(refs["symphony"], b, symphony_k, True)
        times["symphony"].append(time.perf_counter() - t0)
    return {tag: min(t) / q.n_obs * 1e6 for tag, t in times.items()}


def synthetic_query(query: anndata.AnnData, n: int, seed: int = 0) -> anndata.AnnData:
    """``n`` rows of the normalised query resampled with replacement, non-zeros × exp(N(0, 0.1²))."""
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(query.X, dtype=np.float32)
    big = X[rng.integers(0, X.shape[0], size=n)]
    big.data *= np.exp(0.1 * rng.standard_normal(big.data.size, dtype=np.float32))
    out = anndata.AnnData(big, var=pd.DataFrame(index=query.var_names.copy()))
    out.obs_names = [f"q{i}" for i in range(n)]
    return out


def warm_up_search() -> None:
    """Compile pynndescent's index search before a large query is timed: the query share
    searches a query this large among its sample with pynndescent, which a small warm-up
    query searches exactly (a process's first large projection compiles it once; each new
    index still compiles its own search closure, which the timing keeps)."""
    from scnumap.core.reference_index import ReferenceIndex

    X = np.random.default_rng(0).normal(size=(2000, 50)).astype(np.float32)
    ReferenceIndex(X).query(X[:10], 31, n_queries=10**9)


def scale(refs: dict, query: anndata.AnnData, n: int, n_symphony: int, symphony_k: int) -> dict:
    """Seconds for ``n`` synthetic query cells: tl.project (corrected reference) and symphonypy."""
    log(f"    building the {n:,}-cell synthetic query")
    big = synthetic_query(query[:, refs["corrected"].var_names], n)
    out = {"n": n, "nnz": int(big.X.nnz), "gb": (big.X.data.nbytes + big.X.indices.nbytes) / 1e9}
    n_s = min(n, n_symphony)
    small = big[:n_s].copy()
    scnumap.tl.project(big[:100].copy(), refs["corrected"], obs="label")  # the index is built (cached)
    warm_up_search()
    log("    tl.project")
    t0 = time.perf_counter()
    scnumap.tl.project(big, refs["corrected"], obs="label")
    out["project_s"] = time.perf_counter() - t0
    del big
    log(f"    symphonypy on {n_s:,} cells")
    t0 = time.perf_counter()
    symphony_map(refs["symphony"], small, symphony_k, True)
    out["symphony_s"] = time.perf_counter() - t0
    out["n_symphony"] = n_s
    return out


def print_tables(rows: list[tuple[str, dict]], quick: bool) -> None:
    labelled = [(t, r) for t, r in rows if "acc_corrected" in r]
    print("### Pairs and fits\n")
    print(
        "| pair | ref → query | reference batches | reference batch mixing: X_pca / scnumap's X_pca_harmony "
        "/ Symphony's X_pca_harmony | NUMAP fit s, corrected | NUMAP fit s, plain |"
    )
    print("|---|---|---|---|---|---|")
    for title, r in rows:
        mixing = " / ".join(f3(r[f"ref_mixing_{t}"]) for t in ("pca", "corrected", "symphony"))
        print(
            f"| {title} | {r['n_ref']} → {r['n_query']} | {r['n_batches']} | {mixing} "
            f"| {r['fit_corrected']:.0f} | {r['fit_plain']:.0f} |"
        )
    if quick:
        print("\n(`--quick`: short fits on subsampled cells, a smoke run; fit times on a shared machine.)")
    print()
    if labelled:
        print("### Label transfer: accuracy on the query\n")
        print(
            "| pair | scnumap corrected | scnumap corrected, no Unknown | scnumap plain | scnumap plain, no Unknown "
            "| ingest | Symphony | 2-D kNN scnumap corrected | 2-D kNN scnumap corrected, not recentred "
            "| 2-D kNN scnumap plain | 2-D kNN ingest UMAP | 2-D kNN Symphony UMAP |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for title, r in labelled:
            print(
                f"| {title} | {f3(r['acc_corrected'])} | {f3(r['acc_open_corrected'])} | {f3(r['acc_plain'])} "
                f"| {f3(r['acc_open_plain'])} | {f3(r['acc_ingest'])} | {f3(r['acc_symphony'])} "
                f"| {f3(r['knn2d_corrected'])} | {f3(r.get('knn2d_unrecentred'))} | {f3(r['knn2d_plain'])} "
                f"| {f3(r['knn2d_ingest'])} "
                f"| {f3(r['knn2d_symphony'])} |"
            )
        print()
    print("### scnumap mapping score: mean over query cells (share called Unknown)\n")
    print("| pair | corrected | plain |")
    print("|---|---|---|")
    for title, r in rows:
        unk_c = f" ({f3(r['unknown_corrected'])})" if "unknown_corrected" in r else ""
        unk_p = f" ({f3(r['unknown_plain'])})" if "unknown_plain" in r else ""
        print(f"| {title} | {f3(r['score_corrected'])}{unk_c} | {f3(r['score_plain'])}{unk_p} |")
    print()
    head = (
        "| pair | space | scnumap corrected | scnumap corrected, not recentred | scnumap plain | ingest | Symphony |"
        "\n|---|---|---|---|---|---|---|"
    )
    tags = ["corrected", "unrecentred", "plain", "ingest", "symphony"]
    space_names = {
        "search": "search space (corrected PCA / – / ref PCA / ingest's PCA / Symphony's)",
        "2-D": "2-D (NUMAP / NUMAP / NUMAP / UMAP / UMAP)",
    }
    print(f"### Query–reference mixing: reference share among {K_POOLED} pooled neighbours ÷ expected (1 = mixed)\n")
    print(head)
    for title, r in rows:
        for space, name in space_names.items():
            print(f"| {title} | {name} | " + " | ".join(f3(r.get(f"mixing_{t}_{space}")) for t in tags) + " |")
    print()
    if labelled:
        print(f"### Types kept apart: kNN purity among {K_POOLED} pooled neighbours, query cells (all cells)\n")
        print(head)
        for title, r in labelled:
            for space, name in space_names.items():
                cells = [
                    f"{f3(r.get(f'purity_query_{t}_{space}'))} ({f3(r.get(f'purity_all_{t}_{space}'))})"
                    if f"purity_query_{t}_{space}" in r
                    else "–"
                    for t in tags
                ]
                print(f"| {title} | {name} | " + " | ".join(cells) + " |")
        print()
    sys.stdout.flush()


def map_seed_sweep(ref: anndata.AnnData, query: anndata.AnnData, n_comps: int, seeds, quick: bool = False) -> dict:
    """Query–reference mixing in 2-D for several seeds of the map: scnumap's corrected map
    (``tl.numap(batch_key='batch', random_state=s)``, full fit, the query projected as in
    the main tables, with ``obs='label'`` where the pair has labels) and Symphony's (Harmony
    and UMAP with seed ``s``, the query by ``symphonypy.tl.ingest``), each fitted anew per seed."""
    import symphonypy

    prepare(ref, n_comps)
    out = {"seeds": [int(s) for s in seeds], "scnumap": [], "symphony": []}
    for seed in seeds:
        r = ref.copy()
        scnumap.tl.numap(r, batch_key="batch", random_state=int(seed), verbose=False, **(QUICK_FIT if quick else {}))
        q = query[:, r.var_names].copy()
        scnumap.tl.project(q, r, obs="label" if "label" in query.obs and "label" in r.obs else None)
        out["scnumap"].append(pooled(r.obsm["X_numap"], q.obsm["X_numap"])["mixing"])
        r_s = symphony_reference(ref, int(seed))
        q_s = symphony_map(r_s, query, 5, False)
        symphonypy.tl.ingest(q_s, r_s, embedding_method="umap", use_rep="X_pca_harmony")
        out["symphony"].append(pooled(r_s.obsm["X_umap"], q_s.obsm["X_umap"])["mixing"])
        log(f"    map seed {seed}: 2-D mixing scnumap {out['scnumap'][-1]:.3f}, Symphony {out['symphony'][-1]:.3f}")
    return out


def print_map_sweeps(sweeps: list) -> None:
    print(f"### Seed sensitivity of the 2-D mixing: reference share among {K_POOLED} pooled neighbours ÷ expected\n")
    print(
        "Each seed fits the map anew: scnumap `tl.numap(batch_key='batch', random_state=s)` (Harmony, graph, "
        "GrEASE and network), the query by `tl.project` as in the tables above (`obs='label'` where labelled); "
        "Symphony `harmony_integrate(random_seed=s)`, `sc.tl.umap(random_state=s)`, the query by "
        "`symphonypy.tl.ingest`.\n"
    )
    print("| pair | seeds | scnumap, per seed | mean | Symphony, per seed | mean |")
    print("|---|---|---|---|---|---|")
    for title, sw in sweeps:
        a, b = sw["scnumap"], sw["symphony"]
        print(
            f"| {title} | {', '.join(map(str, sw['seeds']))} | {', '.join(f3(x) for x in a)} | {f3(np.mean(a))} "
            f"| {', '.join(f3(x) for x in b)} | {f3(np.mean(b))} |"
        )
    print(flush=True)


def print_sweeps(sweeps: list) -> None:
    print("### Seed sensitivity of the correction: query label accuracy (no Unknown) per Harmony seed\n")
    print(
        "`tl.numap(batch_key='batch', random_state=s)` (short fit; the labels are voted in `X_pca_harmony`, "
        "so only Harmony's clustering matters) and `symphonypy.pp.harmony_integrate(random_seed=s)`; the "
        "uncorrected methods do not depend on it. Main tables: seed 0.\n"
    )
    print("| pair | seeds | scnumap corrected, per seed | min–max | Symphony, per seed | min–max |")
    print("|---|---|---|---|---|---|")
    for title, _, _, sw in sweeps:
        a, b = sw["scnumap"], sw["symphony"]
        print(
            f"| {title} | {', '.join(map(str, sw['seeds']))} | {', '.join(f3(x) for x in a)} "
            f"| {f3(min(a))}–{f3(max(a))} | {', '.join(f3(x) for x in b)} | {f3(min(b))}–{f3(max(b))} |"
        )
    print(flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="*", default=PAIRS, choices=PAIRS)
    parser.add_argument("--sigma", type=float, default=0.5, help="sd of the query's log-normal gene factors (c)")
    parser.add_argument("--dropout", type=float, default=0.3, help="share of the query's counts thinned away (c)")
    parser.add_argument("--ref-sigma", type=float, default=None, help="the shifted reference half's (default --sigma)")
    parser.add_argument("--ref-dropout", type=float, default=None, help="the shifted half's (default --dropout)")
    parser.add_argument("--symphony-k", type=int, default=5, help="neighbours of Symphony's kNN labels")
    parser.add_argument("--quick", action="store_true", help="smoke run: few cells, short fits")
    parser.add_argument("--quick-cells", type=int, default=600, help="cells per side in --quick")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="Harmony seeds of the seed table (none: skip)"
    )
    parser.add_argument(
        "--map-seeds", type=int, nargs="*", default=[], help="seeds of the 2-D mixing table (full fits; none: skip)"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the warm timing on pair (c)")
    parser.add_argument("--scale", action="store_true", help="time --scale-n synthetic query cells on pair (c)")
    parser.add_argument("--scale-n", type=int, default=1_000_000)
    parser.add_argument("--scale-symphony", type=int, default=100_000, help="rows symphonypy is timed on")
    parser.add_argument("--cache", default=None, help="JSON-lines file of finished pairs; a rerun skips them")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)

    print_header("python -u benchmarks/integration.py", args, argv)
    cache = Cache(args.cache)
    rows, sweeps, map_sweeps = [], [], []
    timing_pair = None
    for name in args.pairs:
        title, ref, query, n_comps, control = load_pair(name, args)
        key = (
            f"{name}|sigma={args.sigma}|dropout={args.dropout}|ref_sigma={args.ref_sigma}|"
            f"ref_dropout={args.ref_dropout}|k={args.symphony_k}|quick={args.quick}|"
            f"cells={args.quick_cells if args.quick else 'all'}|v1"
        )
        r = cache.get(key)
        r_control = cache.get(key + "|control") if control is not None else None
        refs = None
        if r is None or (control is not None and r_control is None):
            log(f"{title}: {ref.n_obs} → {query.n_obs} cells, fitting")
            refs = fit_references(ref, n_comps, args.quick)
            r = measure(refs, query, args.symphony_k)
            if control is not None:
                log("    the control: the same references, the query not shifted")
                r_control = measure(refs, control, args.symphony_k)
                cache.put(key + "|control", r_control)
            cache.put(key, r)
        else:
            log(f"{title}: from the cache")
        log(f"    {r}")
        rows.append((title, r))
        if r_control is not None:
            log(f"    control: {r_control}")
            rows.append(("(c′) control: pair (c)'s reference and fits, the query cells **not** shifted", r_control))
        if args.seeds and "label" in query.obs:
            sweep = cache.get(key + f"|seeds={args.seeds}")
            if sweep is None:
                log(f"    Harmony seeds {args.seeds} (short NUMAP fits: the labels are voted in X_pca_harmony)")
                sweep = seed_sweep(ref, query, n_comps, args.seeds, args.symphony_k)
                cache.put(key + f"|seeds={args.seeds}", sweep)
            sweeps.append((title, r["acc_open_corrected"], r["acc_symphony"], sweep))
        if args.map_seeds:
            sweep = cache.get(key + f"|map_seeds={args.map_seeds}")
            if sweep is None:
                log(f"    map seeds {args.map_seeds} (full fits)")
                sweep = map_seed_sweep(ref, query, n_comps, args.map_seeds, args.quick)
                cache.put(key + f"|map_seeds={args.map_seeds}", sweep)
            map_sweeps.append((title, sweep))
        if name == "pbmc4k":
            timing_pair = (title, ref, query, n_comps, refs)
    print_tables(rows, args.quick)
    if sweeps:
        print_sweeps(sweeps)
    if map_sweeps:
        print_map_sweeps(map_sweeps)

    if timing_pair is not None and (not args.no_speed or args.scale):
        title, ref, query, n_comps, refs = timing_pair
        if refs is None:
            log("pair (c) came from the cache: refitting it for the timings")
            refs = fit_references(ref, n_comps, args.quick)
        if not args.no_speed:
            log("speed, warm, best of 3")
            us = speed(refs, query, args.symphony_k)
            print("### Speed on pair (c), warm, best of 3, µs per query cell\n")
            print(
                "| ref → query | scnumap tl.project, corrected (correction, labels, score, 2-D) "
                "| scnumap tl.project, plain | symphonypy map_embedding + transfer_labels_kNN "
                "| scnumap corrected speed-up (Symphony ÷ scnumap) |"
            )
            print("|---|---|---|---|---|")
            print(
                f"| {ref.n_obs} → {query.n_obs} | {us['corrected']:.1f} | {us['plain']:.1f} "
                f"| {us['symphony']:.1f} | {us['symphony'] / us['corrected']:.1f}× |\n",
                flush=True,
            )
        if args.scale:
            log(f"scale: {args.scale_n:,} synthetic query cells")
            s = scale(refs, query, args.scale_n, args.scale_symphony, args.symphony_k)
            extrapolated = s["symphony_s"] * s["n"] / s["n_symphony"]
            print(f"### Scale: {s['n']:,} synthetic query cells (gene space) onto pair (c)'s corrected reference\n")
            print(
                f"Query: {s['nnz']:,} non-zeros, {s['gb']:.2f} GB as CSR; one warm call each (reference index built).\n"
            )
            print("| method | cells timed | s | s per 1M cells |")
            print("|---|---|---|---|")
            print(
                f"| scnumap tl.project, corrected (labels, score, 2-D) | {s['n']:,} | {s['project_s']:.1f} "
                f"| {s['project_s'] * 1e6 / s['n']:.1f} |"
            )
            tag = "" if s["n_symphony"] == s["n"] else " (extrapolated linearly)"
            print(
                f"| symphonypy map_embedding + transfer_labels_kNN | {s['n_symphony']:,} | {s['symphony_s']:.1f} "
                f"| {extrapolated * 1e6 / s['n']:.1f}{tag} |\n",
                flush=True,
            )
    print(f"Run time: {time.perf_counter() - RUN_START:.0f} s.")
    log("done")


if __name__ == "__main__":
    main()
