"""The query correction's rounds, and where the mapping score is computed (no model fits).

    .venv/bin/python benchmarks/correction.py [--sets wang_xin shift0.5 shift1.0 pbmc4k kidney cbmc pbmc68k_reduced]

Same preprocessing as ``benchmarks/mapping.py`` (its ``split``, ``shifted_pbmc4k`` and
Wang → Xin loading; ``shiftS`` is pbmc4k 70/30 with the query's counts given gene-wise
log-normal factors of sd ``S`` and 30 % thinning). The reference gets ``sc.pp.pca``
(50 components, 30 for Wang → Xin) and its soft clusters as ``tl.numap`` stores them
(``scnumap.tl._integrate.compress``); the query enters through the reference loadings and
gene means.

Table 1: accuracy of a 15-NN vote (scikit-learn) in the reference PCA, on the query as
measured and after 1 … 4 rounds of ``QueryCorrection`` (one batch; ``next_round``
re-assigns the query from its corrected coordinates).

Table 2: leave one type out (types with ≥ 30 query cells; all of them, as in
``mapping.py``'s part A): mean AUROC of ``1 - mapping score`` (``MappingCalibration`` on
the reference's exact 14-NN distances, with the query share) when the score is computed on
the query as measured (what ``tl.project`` does for a plain reference) and on the query
after three rounds of correction.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import warnings

import numpy as np
import pandas as pd
import scanpy as sc
from datasets import wang_xin
from mapping import labelled, reference_pca, shifted_pbmc4k, split
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import scnumap
from scnumap.core.correction import QueryCorrection
from scnumap.core.mapping import MappingCalibration
from scnumap.core.query_share import QueryShare
from scnumap.tl._integrate import compress

warnings.filterwarnings("ignore")
sc.settings.verbosity = 0


def load(name: str):
    if name == "wang_xin":
        ref, query = wang_xin()
        for a in (ref, query):
            a.obs["label"] = a.obs["label"].astype(str)
            a.obsm.clear()
            a.varm.clear()
            a.uns.clear()
            a.obsp.clear()
        return ref, query, 30
    if name.startswith("shift"):
        ref, query = shifted_pbmc4k(float(name[5:]), 0.3)
        return ref, query, 50
    ref, query = split(labelled(name))
    return ref, query, 50


def rounds(compression, Z: np.ndarray, n: int) -> np.ndarray:
    codes = np.zeros(Z.shape[0], dtype=np.int64)
    correction = QueryCorrection(compression, 1)
    for r in range(n):
        if r:
            correction.next_round()
        correction.add(Z, codes)
    return correction.apply(Z, codes)


def mapping_score(R: np.ndarray, Q: np.ndarray) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=14).fit(R)
    cal = MappingCalibration.from_distances(nn.kneighbors_graph(mode="distance"))
    d, i = nn.kneighbors(Q)
    stats = cal.statistics(d.astype(np.float32), i)
    pool = QueryShare(R, Q)
    share = pool.share(Q, np.arange(Q.shape[0]))
    if not pool.mixes(share):
        return cal.score(stats)
    return cal.score(stats, share - pool.shift(share), pool.null, np.arange(R.shape[0]))


def prepare(ref, query, n_comps):
    ref = ref.copy()
    sc.pp.pca(ref, n_comps=n_comps, random_state=0)
    R = ref.obsm["X_pca"]
    return ref, R, reference_pca(ref, query).astype(np.float32), compress(R.astype(np.float64), 0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    default = ["wang_xin", "shift0.5", "shift1.0", "pbmc4k", "kidney", "cbmc", "pbmc68k_reduced"]
    parser.add_argument("--sets", nargs="*", default=default)
    args = parser.parse_args(argv)
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"scnumap {scnumap.__version__}\n"
    )
    accuracy, auroc = {}, {}
    for name in args.sets:
        ref_all, query, n_comps = load(name)
        ref, R, Z, compression = prepare(ref_all, query, n_comps)
        truth = query.obs["label"].astype(str).to_numpy()
        vote = KNeighborsClassifier(15).fit(R, ref.obs["label"].astype(str).to_numpy())
        row = {"as measured": np.mean(vote.predict(Z) == truth)}
        for n in (1, 2, 3, 4):
            row[f"{n} round{'s' if n > 1 else ''}"] = np.mean(vote.predict(rounds(compression, Z, n)) == truth)
        accuracy[name] = row
        counts = query.obs["label"].value_counts()
        measured, corrected = [], []
        for left_out in [t for t, c in counts.items() if c >= 30]:
            _, R_l, Z_l, comp_l = prepare(ref_all[ref_all.obs["label"] != left_out], query, n_comps)
            y = (query.obs["label"] == left_out).to_numpy()
            measured.append(roc_auc_score(y, 1 - mapping_score(R_l, Z_l)))
            corrected.append(roc_auc_score(y, 1 - mapping_score(R_l, rounds(comp_l, Z_l, 3))))
        auroc[name] = {
            "types": len(measured),
            "score on the query as measured": np.mean(measured),
            "score after the correction": np.mean(corrected),
        }
    print("### 1. Accuracy of a 15-NN vote in the reference PCA, by rounds of correction\n")
    print(pd.DataFrame(accuracy).round(3).to_markdown(), "\n")
    print("### 2. Leave one type out: mean AUROC of 1 - mapping score\n")
    print(pd.DataFrame(auroc).T.round(3).to_markdown())


if __name__ == "__main__":
    main()
