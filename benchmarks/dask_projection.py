"""Atlas projection as dask tasks: a query of millions of cells in zarr, on a dask LocalCluster.

    .venv/bin/python benchmarks/dask_projection.py --query 10000000 --workers 2

Synthetic data: the 50-D mixture of ``mapping_scale.py`` (20 clusters; cluster = label) as
50 "genes". Reference: ``--reference`` cells, ``sc.pp.pca`` (30 PCs), ``sc.pp.neighbors``,
``scnumap.tl.numap`` (a short budget: the fit is not measured). Query: written to a zarr
array on disk block by block (never whole in memory) and read back lazily as the
AnnData's ``X`` (``dask.array.from_zarr``, chunks of ``--chunk`` rows).

Timed, on a ``dask.distributed.LocalCluster`` of ``--workers`` processes with one thread
each: ``scnumap.tl.project(query, ref, obs="label")`` — three rounds of the query
correction (map-reduce over the chunks), the query sample, one projection task per chunk
(genes → PCs → correction → search → score → placement → labels) on the worker holding
it, the per-cell ``obs`` columns gathered — then writing the wide results (``obsm``: 2-D
coordinates, label probabilities) from the workers to zarr, never gathered. Reported:
wall time, cells per second, peak resident memory of each worker and of the client
process, label accuracy and the share called Unknown (every query cell comes from a
reference cluster). ``--in-process N`` also projects the first N query cells without a
cluster (the chunks one after the other in the calling process), for comparison.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from mapping_scale import mixture

import scnumap

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0


def peak_rss_gb() -> float:
    """Peak resident memory of the calling process (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def reference(n: int, epochs: int) -> anndata.AnnData:
    X, y = mixture(n, seed=0)
    ref = anndata.AnnData(X=X, obs=pd.DataFrame(index=[f"r{i}" for i in range(n)]))
    ref.var_names = [f"g{j}" for j in range(X.shape[1])]
    ref.obs["label"] = pd.Categorical([f"cluster{c}" for c in y])
    sc.pp.pca(ref, n_comps=30, random_state=0)
    sc.pp.neighbors(ref, n_neighbors=15, random_state=0)
    scnumap.tl.numap(ref, densmap=False, epochs=epochs, grease_steps=200, random_state=0, verbose=False)
    return ref


def write_query(path: Path, n: int, chunk: int) -> np.ndarray:
    """The query's genes in a zarr array at ``path``, written block by block; returns the labels."""
    import zarr

    z = zarr.open_array(str(path), mode="w", shape=(n, 50), chunks=(chunk, 50), dtype="f4")
    labels = np.empty(n, dtype=np.int64)
    block = 500_000
    for start in range(0, n, block):
        X, y = mixture(min(block, n - start), seed=1 + start // block)
        z[start : start + X.shape[0]] = X
        labels[start : start + X.shape[0]] = y
    return labels


def query_adata(path: Path, chunk: int, var_names, n: int | None = None) -> anndata.AnnData:
    import dask.array as da

    X = da.from_zarr(str(path), chunks=(chunk, 50))
    if n is not None:
        X = X[:n]
    ad = anndata.AnnData(X=X, obs=pd.DataFrame(index=pd.RangeIndex(X.shape[0]).astype(str)))
    ad.var_names = var_names
    return ad


def quality(query: anndata.AnnData, labels: np.ndarray) -> tuple[float, float]:
    called = query.obs["label_numap"].astype(str).to_numpy()
    truth = np.array([f"cluster{c}" for c in range(20)])[labels]
    return float(np.mean(called == truth)), float(np.mean(called == "Unknown"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--query", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=100_000, help="query rows per chunk (zarr and dask)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-process", type=int, default=1_000_000, help="cells projected without a cluster")
    parser.add_argument("--epochs", type=int, default=5, help="NUMAP training budget (not measured)")
    parser.add_argument("--dir", default=None, help="scratch folder for the zarr stores (default: a temporary one)")
    args = parser.parse_args()
    import dask
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    print(
        f"{datetime.date.today()}, {platform.node()}: torch {torch.__version__}, scanpy {sc.__version__}, "
        f"dask {dask.__version__}, scnumap {scnumap.__version__}\n"
    )
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="scnumap-dask-"))
    t0 = time.perf_counter()
    ref = reference(args.reference, args.epochs)
    print(f"reference: {args.reference:,} cells, PCA + graph + fit {time.perf_counter() - t0:.0f} s (not measured)")
    t0 = time.perf_counter()
    labels = write_query(scratch / "query_X.zarr", args.query, args.chunk)
    print(f"query: {args.query:,} cells × 50 genes in zarr, written in {time.perf_counter() - t0:.0f} s")

    rows = []
    if args.in_process:
        n = min(args.in_process, args.query)
        q = query_adata(scratch / "query_X.zarr", args.chunk, ref.var_names, n)
        t0 = time.perf_counter()
        scnumap.tl.project(q, ref, obs="label")
        seconds = time.perf_counter() - t0
        accuracy, unknown = quality(q, labels[:n])
        rows.append(
            ("no cluster (chunks in turn, calling process)", n, seconds, None, "–", peak_rss_gb(), accuracy, unknown)
        )
        del q

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        q = query_adata(scratch / "query_X.zarr", args.chunk, ref.var_names)
        t0 = time.perf_counter()
        scnumap.tl.project(q, ref, obs="label")
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        da.to_zarr(q.obsm["X_numap"], str(scratch / "X_numap.zarr"), overwrite=True)
        da.to_zarr(q.obsm["label_numap_probabilities"], str(scratch / "probabilities.zarr"), overwrite=True)
        write_s = time.perf_counter() - t1
        workers = client.run(peak_rss_gb)
        accuracy, unknown = quality(q, labels)
        per_worker = ", ".join(f"{gb:.2f}" for gb in workers.values())
        rows.append(
            (
                f"LocalCluster, {args.workers} workers × 1 thread",
                args.query,
                seconds,
                write_s,
                per_worker,
                peak_rss_gb(),
                accuracy,
                unknown,
            )
        )
    shutil.rmtree(scratch, ignore_errors=True)

    print(
        "\n| run | query cells | tl.project s | cells/s | obsm → zarr s | peak RSS per worker GB | peak RSS client GB "
        "| label accuracy | Unknown share |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, seconds, write_s, per_worker, client_gb, accuracy, unknown in rows:
        write = "–" if write_s is None else f"{write_s:.1f}"
        print(
            f"| {name} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | {write} | {per_worker} | {client_gb:.2f} "
            f"| {accuracy:.3f} | {unknown:.4f} |"
        )


if __name__ == "__main__":
    main()
