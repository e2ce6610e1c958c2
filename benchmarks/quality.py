"""Quality and time: scnumap (NUMAP, NUMAP+DensMAP) next to umap-learn (UMAP,
UMAP densMAP, UMAP.transform) on the same representation, in one run.

    .venv/bin/python benchmarks/quality.py [pbmc68k_reduced digits paul15 pbmc4k kidney ...]
        [--spectral N]

Prints one markdown table per data set: fit time, trustworthiness@15, kNN
preservation@15, density correlation, centroid-distance Spearman, and for three
seeded 70/30 splits the mean kNN (k=15) label-transfer accuracy of held-out cells and
the warm transform time per cell. ``--spectral N``: NUMAP's ``n_spectral_components``
(0: the automatic count, ``None``; without it, NUMAP's default).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from datasets import LABELLED, available
from scaling import spectral_params, warm_up

from scnumap import NUMAP
from scnumap.core import metrics

warnings.filterwarnings("ignore")


def fit_umap(X, seed, densmap=False):
    import umap

    return umap.UMAP(random_state=seed, densmap=densmap).fit(X)


#: NUMAP's parameters of this run (``--spectral``).
NUMAP_PARAMS: dict = {}


def fit_numap(X, seed, densmap=False, **params):
    return NUMAP(random_state=seed, densmap=densmap, device="cpu", **{**NUMAP_PARAMS, **params}).fit(X)


METHODS = {
    "umap-learn UMAP": (fit_umap, False),
    "umap-learn densMAP": (fit_umap, True),
    "scnumap NUMAP": (fit_numap, False),
    "scnumap NUMAP+DensMAP": (fit_numap, True),
}


def embedding(model):
    return model.embedding_


def timed_transform(model, X):
    model.transform(X[:5])  # warm-up (numba compilation, allocations)
    t0 = time.perf_counter()
    out = model.transform(X)
    return out, (time.perf_counter() - t0) / len(X)


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A labelled set's representation (``X_pca``; digits: its pixels) and labels; prints its heading."""
    ad = LABELLED[name]()
    X = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
    print(f"\n### {name}: {X.shape[0]} cells × {X.shape[1]} dims\n", flush=True)
    return X, ad.obs["label"].astype(str).to_numpy()


def transfer(fit, X, labels, n_splits: int = 3) -> tuple[float, float]:
    """``fit(X, seed)`` on seeded 70/30 splits: mean kNN label-transfer accuracy of the held-out
    rows (``transform``) and the median warm transform time per row, in seconds."""
    accs, speeds = [], []
    for seed in range(n_splits):
        order = np.random.default_rng(seed).permutation(len(X))
        tr, te = order[: int(0.7 * len(X))], order[int(0.7 * len(X)) :]
        m = fit(X[tr], seed)
        Q, per_cell = timed_transform(m, X[te])
        accs.append(metrics.label_transfer_accuracy(embedding(m), labels[tr], Q, labels[te]))
        speeds.append(per_cell)
    return float(np.mean(accs)), float(np.median(speeds))


def run(name: str) -> None:
    X, labels = load(name)
    print("| method | fit s | trust@15 | kNN pres@15 | density r | centroid ρ | transfer acc | transform µs/cell |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for method, (fit, densmap) in METHODS.items():
        t0 = time.perf_counter()
        model = fit(X, 0, densmap)
        fit_s = time.perf_counter() - t0
        E = embedding(model)
        acc = speed = "–"
        if not densmap:  # transfer measured for the plain models
            mean_acc, per_cell = transfer(lambda X, seed, fit=fit: fit(X, seed, False), X, labels)
            acc, speed = f"{mean_acc:.3f}", f"{per_cell * 1e6:.1f}"
        print(
            f"| {method} | {fit_s:.1f} | {metrics.trustworthiness(X, E):.3f} | {metrics.knn_preservation(X, E):.3f} "
            f"| {metrics.density_correlation(X, E):.3f} | {metrics.centroid_distance_spearman(X, E, labels):.3f} "
            f"| {acc} | {speed} |",
            flush=True,
        )


def grease_and_circles() -> None:
    from sklearn.datasets import make_circles

    from scnumap import GrEASE

    print("\n### GrEASE (Grassmann distance to eigsh, k = 4) and the seed's two circles\n")
    print("Against the symmetric Laplacian's eigenvectors phi and the random-walk ones GrEASE")
    print("learns (D^-1/2 phi, docs/method.md), three seeds each; eigenvalues against eigsh's.\n")
    ad = LABELLED["pbmc68k_reduced"]()
    Xc, yc = make_circles(n_samples=5000, noise=0.05, factor=0.5, random_state=0)
    Xc = Xc.astype(np.float32)
    for name, X in (("pbmc68k_reduced X_pca", np.asarray(ad.obsm["X_pca"])), ("two circles", Xc)):
        symmetric = metrics.exact_spectral_embedding(X, 4, 10)
        walk, exact_values = metrics.exact_spectral_embedding(X, 4, 10, random_walk=True, return_eigenvalues=True)
        print(
            f"- {name}: exact phi vs exact D^-1/2 phi (the degree weighting alone): "
            f"{metrics.grassmann_distance(symmetric, walk):.3f}; eigsh eigenvalues "
            + " / ".join(f"{v:.6g}" for v in exact_values),
            flush=True,
        )
        for seed in range(3):
            t0 = time.perf_counter()
            model = GrEASE(4, random_state=seed)
            S = model.fit_transform(X)
            dt = time.perf_counter() - t0
            values = " / ".join(f"{v:.6g}" for v in np.asarray(model.eigenvalues_).ravel())
            print(
                f"- {name}, seed {seed}: Grassmann distance {metrics.grassmann_distance(S, symmetric):.3f} "
                f"(symmetric), {metrics.grassmann_distance(S, walk):.4f} (random walk); eigenvalues {values}; "
                f"fit {dt:.1f} s",
                flush=True,
            )
    order = np.random.default_rng(0).permutation(len(Xc))
    tr, te = order[:3500], order[3500:]
    m = NUMAP(random_state=0).fit(Xc[tr])
    acc = metrics.label_transfer_accuracy(m.embedding_, yc[tr], m.transform(Xc[te]), yc[te])
    print(f"- two circles: kNN (k=15) accuracy of 1500 held-out points via transform: {acc:.4f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ["pbmc68k_reduced", "digits", "paul15", "pbmc4k", "kidney", "grease"]
    parser.add_argument("names", nargs="*", default=default, choices=[*LABELLED, "grease"], metavar="NAME")
    parser.add_argument("--spectral", type=int, default=None, help="n_spectral_components (0: automatic)")
    args = parser.parse_args()
    NUMAP_PARAMS.update(spectral_params(args.spectral))
    if NUMAP_PARAMS:
        print(f"NUMAP(n_spectral_components={NUMAP_PARAMS['n_spectral_components']})")
    warm_up(peers=True)
    for name in args.names:
        if name == "grease":
            grease_and_circles()
        elif available(name):
            run(name)
        else:
            print(f"\n{name}: data set absent, skipped")
