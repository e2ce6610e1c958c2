"""The main job: a reference embedding with DensMAP, projection of held-out cells with
label transfer, numbers printed and a PNG figure of both. Data: scanpy's bundled
``pbmc68k_reduced`` (no download).

    .venv/bin/python benchmarks/main_job.py [--out figures/main_job.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import scanpy as sc

import scnumap
from scnumap.core import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures/main_job.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    adata = sc.datasets.pbmc68k_reduced()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(adata.n_obs)
    ref = adata[order[: int(0.7 * adata.n_obs)]].copy()
    query = adata[order[int(0.7 * adata.n_obs) :]].copy()
    for ad in (ref, query):
        ad.X = np.nan_to_num(ad.X)
        del ad.obsm["X_pca"], ad.uns["neighbors"], ad.obsp["connectivities"], ad.obsp["distances"]
    sc.pp.pca(ref, n_comps=50, random_state=args.seed)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=args.seed)

    t0 = time.perf_counter()
    scnumap.tl.numap(ref, random_state=args.seed)  # DensMAP on by default
    fit_s = time.perf_counter() - t0
    scnumap.tl.project(query[:1].copy(), ref)  # warm-up
    t0 = time.perf_counter()
    scnumap.tl.project(query, ref, obs="bulk_labels")
    project_s = time.perf_counter() - t0

    truth = query.obs["bulk_labels"].astype(str).to_numpy()
    pred = query.obs["bulk_labels_numap"].astype(str).to_numpy()
    X = ref.obsm["X_pca"]
    E = ref.obsm["X_numap"]
    print(f"reference: {ref.n_obs} cells, query: {query.n_obs} cells (pbmc68k_reduced, 70/30 split)")
    print(f"fit (GrEASE + NUMAP + DensMAP): {fit_s:.1f} s")
    print(
        f"projection of {query.n_obs} cells: {project_s * 1e3:.1f} ms "
        f"({project_s / query.n_obs * 1e6:.1f} us per cell, label transfer included)"
    )
    print(f"trustworthiness@15: {metrics.trustworthiness(X, E):.3f}")
    print(f"kNN preservation@15: {metrics.knn_preservation(X, E):.3f}")
    print(f"density correlation: {metrics.density_correlation(X, E):.3f}")
    print(f"label transfer accuracy (bulk_labels): {np.mean(pred == truth):.3f}")

    fig = scnumap.pl.project(
        query,
        ref,
        color=["bulk_labels", "bulk_labels_numap", "bulk_labels_numap_confidence"],
        title=["query: true labels", "query: transferred labels", "query: transfer confidence"],
        show=False,
        return_fig=True,
    )
    fig.savefig(out, dpi=150, bbox_inches="tight")
    print(f"figure: {out}")


if __name__ == "__main__":
    main()
