"""The model's input space: validation of the stored entry, Scanpy's choice rule, column means."""

import copy
import itertools

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from scnumap.core.model_io import ModelFormatError
from scnumap.core.representation import Representation
from scnumap.tl import _representation
from scnumap.tl._representation import choose_representation, column_mean

N_GENES, N_DIMS = 12, 4
WHERE = "uns['numap']['model']/representation"


def _pca_entry() -> dict:
    rng = np.random.default_rng(0)
    return Representation(
        "X_pca",
        N_DIMS,
        has_pca=True,
        var_names=np.array([f"g{i}" for i in range(N_GENES)]),
        pca_loadings=rng.normal(size=(N_GENES, N_DIMS)).astype(np.float32),
        pca_mean=rng.normal(size=N_GENES).astype(np.float32),
    ).to_dict()


def _x_entry() -> dict:
    return Representation("X", N_DIMS, var_names=np.array(["a", "b", "c", "d"])).to_dict()


def test_round_trip():
    for entry in (_pca_entry(), _x_entry(), Representation("X_scvi", N_DIMS, truncated=True).to_dict()):
        rep = Representation.from_dict(entry, n_features=N_DIMS)
        again = rep.to_dict()
        assert set(again) == set(entry)
        for key, value in entry.items():
            np.testing.assert_array_equal(again[key], value)


def _tamper(entry, key, value):
    entry = copy.deepcopy(entry)
    if value is KeyError:
        del entry[key]
    else:
        entry[key] = value
    return entry


NAN_MEAN = np.full(N_GENES, np.nan, dtype=np.float32)


@pytest.mark.parametrize(
    ("make", "key", "value", "message"),
    [
        (_pca_entry, "pca_loadings", KeyError, r"representation` has no `pca_loadings` entry"),
        (_pca_entry, "pca_loadings", np.zeros((N_GENES, 1), np.float32), r"pca_loadings` must have shape \(12, 4\)"),
        (_pca_entry, "pca_loadings", np.zeros((N_GENES + 1, N_DIMS), np.float32), r"must have shape \(12, 4\)"),
        (_pca_entry, "pca_mean", NAN_MEAN, r"representation/pca_mean` contains NaN"),
        (_pca_entry, "pca_mean", np.zeros(3, np.float32), r"pca_mean` must have shape \(12,\)"),
        (_pca_entry, "n_dims", np.int64(1), "/n_dims` is 1 but the network takes 4 inputs"),
        (_pca_entry, "n_dims", np.float64(4.5), "/n_dims` must be an integer, got 4.5"),
        (_pca_entry, "n_dims", KeyError, "no `n_dims` entry"),
        (_pca_entry, "use_rep", np.int64(3), "/use_rep` must be a non-empty string, got 3 of type int64"),
        (_pca_entry, "use_rep", "X_other", "/has_pca` is True but `use_rep` is 'X_other'"),
        (_pca_entry, "has_pca", np.int64(2), r"/has_pca` must be a boolean \(True/False or 0/1\), got 2"),
        (_pca_entry, "var_names", np.arange(N_GENES), "/var_names` must hold strings"),
        (_pca_entry, "var_names", np.array(["g"] * N_GENES), "duplicate names"),
        (_pca_entry, "var_names", np.array(["g0", "g1"]), r"pca_loadings` must have shape \(2, 4\)"),
        (_pca_entry, "evil", np.zeros(1), "unexpected entries"),
        (_x_entry, "var_names", np.array(["a", "b", "c"]), "has 3 genes but the model takes 4"),
        (_x_entry, "var_names", KeyError, "no `var_names` entry"),
        (_x_entry, "pca_mean", np.zeros(4, np.float32), "/pca_mean` is present but `has_pca` is False"),
    ],
)
def test_tampered_representation_is_refused(make, key, value, message):
    with pytest.raises(ModelFormatError, match=message):
        Representation.from_dict(_tamper(make(), key, value), n_features=N_DIMS, where=WHERE)


def test_not_a_dict_is_refused():
    with pytest.raises(ModelFormatError, match="representation` must be a dict, got str"):
        Representation.from_dict("X_pca", n_features=N_DIMS, where=WHERE)


# --- Scanpy's rule -------------------------------------------------------------------------


def _adata(n_vars: int, with_pca: bool) -> anndata.AnnData:
    rng = np.random.default_rng(n_vars)
    ad = anndata.AnnData(rng.normal(size=(40, n_vars)).astype(np.float32))
    if with_pca:
        ad.obsm["X_pca"] = rng.normal(size=(40, 10)).astype(np.float32)
    ad.obsm["X_other"] = rng.normal(size=(40, 8)).astype(np.float32)
    return ad


GRID = list(itertools.product([30, 50, 51, 100], [True, False], [None, "X", "X_pca", "X_other"], [None, 0, 5, 9, 20]))


def test_choice_matches_scanpy():
    scanpy_utils = pytest.importorskip("scanpy.tools._utils")
    scanpy_choose = getattr(scanpy_utils, "_choose_representation", None)
    if scanpy_choose is None:
        pytest.skip("scanpy.tools._utils._choose_representation is absent in this scanpy")
    compared = 0
    for n_vars, with_pca, use_rep, n_pcs in GRID:
        ad = _adata(n_vars, with_pca)
        case = f"n_vars={n_vars}, X_pca={with_pca}, use_rep={use_rep}, n_pcs={n_pcs}"
        if use_rep is None and n_pcs != 0 and n_vars > 50 and not with_pca:
            with pytest.raises(ValueError, match=r"Run `sc\.pp\.pca\(adata\)`"):
                choose_representation(ad, use_rep, n_pcs)
            continue  # scanpy runs sc.pp.pca here
        try:
            expected = scanpy_choose(ad.copy(), use_rep=use_rep, n_pcs=n_pcs, silent=True)
        except ValueError:
            with pytest.raises(ValueError, match="`"):
                choose_representation(ad, use_rep, n_pcs)
            continue
        if expected.shape[1] == 0:  # scanpy slices obsm[...][:, :0]; that is no space to train on
            with pytest.raises(ValueError, match=r"pass 1 <= n_pcs"):
                choose_representation(ad, use_rep, n_pcs)
            continue
        X, key, n_dims = choose_representation(ad, use_rep, n_pcs)
        np.testing.assert_array_equal(X, expected, err_msg=case)
        assert n_dims == expected.shape[1], case
        assert key in ("X", *ad.obsm), case
        compared += 1
    assert compared > len(GRID) // 2


def test_no_pca_and_many_genes_names_the_fix():
    with pytest.raises(ValueError, match=r"has 100 genes \(> 50\) and no `obsm\['X_pca'\]`.*sc\.pp\.pca\(adata\)"):
        choose_representation(_adata(100, False), None, None)


# --- column means in row blocks ----------------------------------------------------------


class _RowBlocksOnly:
    """A matrix that hands out at most ``limit`` rows at a time (as a backed file would)."""

    def __init__(self, X, limit):
        self.X, self.limit, self.shape = X, limit, X.shape

    def __getitem__(self, item):
        rows = item[0] if isinstance(item, tuple) else item
        if not isinstance(rows, slice) or len(range(*rows.indices(self.shape[0]))) > self.limit:
            raise AssertionError(f"read {item!r}: more than {self.limit} rows at once")
        return self.X[item]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole matrix was converted to an array")


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_column_mean_reads_row_blocks(monkeypatch, fmt):
    rng = np.random.default_rng(0)
    X = rng.poisson(1.0, size=(1000, 30)).astype(np.float32)
    data = X if fmt == "dense" else getattr(sp, f"{fmt}_matrix")(X)
    monkeypatch.setattr(_representation, "BLOCK_VALUES", 30 * 64)
    got = column_mean(_RowBlocksOnly(data, 64))
    np.testing.assert_allclose(got, X.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert got.dtype == np.float64


def test_column_mean_dask():
    da = pytest.importorskip("dask.array")
    X = np.random.default_rng(1).normal(size=(500, 20)).astype(np.float32)
    np.testing.assert_allclose(column_mean(da.from_array(X, chunks=(100, 20))), X.mean(axis=0, dtype=np.float64))
