"""Benchmark data: scanpy's pbmc68k_reduced, sklearn's digits, and the real sets in
../shared/data after the usual normalise_total → log1p → PCA(50). Every loader returns
an AnnData with ``obsm['X_pca']`` and labels in ``obs['label']``."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

SCDCC = {
    "pbmc4k": "pbmc4k_10x_scdcc/10X_PBMC_top2000.h5",
    "kidney": "human_kidney_scdcc/human_kidney_counts_top2000.h5",
    "cbmc": "cbmc_citeseq_scdcc/CITE_CBMC_counts_top2000.h5",
    "bladder": "mouse_bladder_scdcc/mouse_bladder_cell_top2000.h5",
    "worm": "worm_neuron_scdcc/worm_neuron_cell_top2000.h5",
}


def pbmc68k() -> anndata.AnnData:
    ad = sc.datasets.pbmc68k_reduced()
    ad.X = np.nan_to_num(ad.X)
    ad.obs["label"] = ad.obs["bulk_labels"].astype(str)
    return ad


def digits() -> anndata.AnnData:
    from sklearn.datasets import load_digits

    d = load_digits()
    ad = anndata.AnnData(d.data.astype(np.float32))
    ad.obsm["X_pca"] = d.data.astype(np.float32)  # the 64 pixels are the representation
    ad.obs["label"] = pd.Categorical(d.target.astype(str))
    return ad


def counts_to_pca(ad: anndata.AnnData, n_comps: int = 50, seed: int = 0) -> anndata.AnnData:
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    sc.pp.pca(ad, n_comps=min(n_comps, ad.n_vars - 1), random_state=seed)
    return ad


def scdcc(name: str) -> anndata.AnnData:
    import h5py

    with h5py.File(SHARED / SCDCC[name], "r") as f:
        X = sp.csr_matrix(np.asarray(f["X"], dtype=np.float32))
        y = np.asarray(f["Y"]).astype(str)
    ad = anndata.AnnData(X)
    ad.var_names = [f"gene{i}" for i in range(ad.n_vars)]
    ad.obs["label"] = pd.Categorical(y)
    return counts_to_pca(ad)


def paul15() -> anndata.AnnData:
    ad = anndata.read_h5ad(SHARED / "paul15_tradeseq/paul15_240genes.h5ad")
    ad.obs["label"] = ad.obs["cell_type"].astype(str)
    return counts_to_pca(ad)


def wang_xin() -> tuple[anndata.AnnData, anndata.AnnData]:
    """Wang (reference) and Xin (query, other technology) pancreas, on the Wang genes."""
    ref = anndata.read_h5ad(SHARED / "pancreas_wang_xin_scclassify/wang_pancreas_subset.h5ad")
    query = anndata.read_h5ad(SHARED / "pancreas_wang_xin_scclassify/xin_pancreas_subset.h5ad")
    query = query[:, ref.var_names].copy()
    for ad in (ref, query):
        ad.obs["label"] = ad.obs["cell_type"].astype(str)
    sc.pp.pca(ref, n_comps=30, random_state=0)
    return ref, query


def kang() -> tuple[anndata.AnnData, anndata.AnnData]:
    """Kang PBMC: control (reference) and IFN-β stimulated (query); no cell-type labels."""
    ad = anndata.read_h5ad(SHARED / "kang_pbmc_ifnb_harmony/kang_pbmc_ctrl_stim.h5ad")
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    ref = ad[ad.obs["condition"] == "ctrl"].copy()
    query = ad[ad.obs["condition"] == "stim"].copy()
    sc.pp.highly_variable_genes(ref, n_top_genes=2000)
    ref = ref[:, ref.var["highly_variable"]].copy()
    query = query[:, ref.var_names].copy()
    sc.pp.pca(ref, n_comps=50, random_state=0)
    return ref, query


LABELLED = {
    "pbmc68k_reduced": pbmc68k,
    "digits": digits,
    "paul15": paul15,
    **{name: (lambda n=name: scdcc(n)) for name in SCDCC},
}


def available(name: str) -> bool:
    return name in ("pbmc68k_reduced", "digits") or SHARED.exists()
