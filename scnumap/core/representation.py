"""Which input space a NUMAP model was trained on, as validated plain data.

A model maps ``n_features`` input columns to the embedding; the representation says
where those columns come from, so that new cells can be brought into the same space:

``use_rep``
    ``"X"`` (the genes, in the order of ``var_names``), ``"X_pca"`` or another
    ``obsm`` key (the first ``n_dims`` columns when ``truncated``).
``n_dims``
    Input width; equals the network's ``n_features``.
``has_pca``
    ``True`` when ``X_pca`` is ``(X - pca_mean) @ pca_loadings``: a query is then
    projected from its genes, ``(X_query[:, var_names] - pca_mean) @ pca_loadings``,
    i.e. centred on the **reference** mean and multiplied by the reference loadings.
``var_names``, ``pca_loadings``, ``pca_mean``
    ``(n_genes,)`` gene names, ``(n_genes, n_dims)`` loadings and ``(n_genes,)`` mean
    (the last two only when ``has_pca``).
``pca_mismatch``
    For an ``X_pca`` that is not ``(X - mean) @ PCs``: the relative mismatch found at fit
    time (``-1`` when no loadings or no finite comparison were available).
``scale_mean``, ``scale_std``, ``scale_max``
    Only for a reference whose ``X`` was standardised by ``sc.pp.scale`` (gene-based
    representations): the ``(n_genes,)`` means and standard deviations (all > 0) it
    used (``var['mean']``, ``var['std']``), and its clip value ``max_value`` when the
    clipping is visible in ``X`` (absent: no clipping). A query's genes are then first
    brought to the reference's scale, ``clip((X_query - scale_mean) / scale_std,
    -scale_max, scale_max)``. Models without these keys are not scaled.
``integrated``
    ``True`` when ``use_rep`` (e.g. ``X_pca_harmony``) is a batch-integrated version of the
    PCA: the loadings then map genes to the uncorrected PCA, and the model's
    ``correction`` entry (:class:`scnumap.core.correction.ReferenceCompression`) maps a
    query from there into ``use_rep``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .model_io import ModelFormatError, _array, _scalar

_KEYS = {
    "use_rep",
    "n_dims",
    "has_pca",
    "var_names",
    "pca_loadings",
    "pca_mean",
    "pca_mismatch",
    "truncated",
    "integrated",
    "scale_mean",
    "scale_std",
    "scale_max",
}


@dataclass(frozen=True)
class Representation:
    """The input space of a trained model (see the module docstring for the fields)."""

    use_rep: str
    n_dims: int
    has_pca: bool = False
    var_names: np.ndarray | None = None
    pca_loadings: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    pca_mismatch: float | None = None
    truncated: bool = False
    integrated: bool = False
    scale_mean: np.ndarray | None = None
    scale_std: np.ndarray | None = None
    scale_max: float | None = None

    @property
    def scaled(self) -> bool:
        """Whether a query's genes are standardised like the reference's (``sc.pp.scale``)."""
        return self.scale_mean is not None

    @property
    def from_genes(self) -> bool:
        """Whether a query enters through its genes (``X``, or ``X_pca`` with loadings)."""
        return self.use_rep == "X" or self.has_pca

    def to_dict(self) -> dict:
        """Plain arrays, strings and numbers, as h5ad stores them."""
        out: dict = {"use_rep": self.use_rep, "n_dims": np.int64(self.n_dims), "has_pca": np.bool_(self.has_pca)}
        if self.truncated:
            out["truncated"] = np.bool_(True)
        if self.integrated:
            out["integrated"] = np.bool_(True)
        if self.var_names is not None:
            out["var_names"] = np.asarray(self.var_names, dtype=str)
        if self.has_pca:
            out["pca_loadings"] = np.asarray(self.pca_loadings, dtype=np.float32)
            out["pca_mean"] = np.asarray(self.pca_mean, dtype=np.float32)
        if self.pca_mismatch is not None:
            out["pca_mismatch"] = np.float64(self.pca_mismatch)
        if self.scaled:
            out["scale_mean"] = np.asarray(self.scale_mean, dtype=np.float32)
            out["scale_std"] = np.asarray(self.scale_std, dtype=np.float32)
            if self.scale_max is not None:
                out["scale_max"] = np.float64(self.scale_max)
        return out

    @classmethod
    def from_dict(cls, entry, *, n_features: int, where: str = "model/representation") -> Representation:
        """Validate a stored representation against a network with ``n_features`` inputs.

        Raises
        ------
        ModelFormatError
            (a ``ValueError``) naming the entry that is missing, of the wrong type or
            shape, not finite, or inconsistent with ``n_features``.
        """
        if not isinstance(entry, Mapping):
            raise ModelFormatError(f"`{where}` must be a dict, got {type(entry).__name__}.")
        extra = set(entry) - _KEYS
        if extra:
            raise ModelFormatError(f"`{where}` has unexpected entries {sorted(extra)}.")
        use_rep = _string(entry, "use_rep", where)
        n_dims = _scalar(entry, "n_dims", where, int, minimum=1)
        if n_dims != n_features:
            raise ModelFormatError(
                f"`{where}/n_dims` is {n_dims} but the network takes {n_features} inputs; the model is corrupted."
            )
        has_pca = _scalar(entry, "has_pca", where, bool)
        truncated = _scalar(entry, "truncated", where, bool) if "truncated" in entry else False
        mismatch = _scalar(entry, "pca_mismatch", where, float) if "pca_mismatch" in entry else None
        integrated = _scalar(entry, "integrated", where, bool) if "integrated" in entry else False
        if integrated and (not has_pca or use_rep in ("X", "X_pca")):
            raise ModelFormatError(
                f"`{where}/integrated` is True but `use_rep` is {use_rep!r} and `has_pca` {has_pca}; an integrated "
                "representation is an obsm key other than 'X_pca' with the PCA loadings stored."
            )
        if has_pca and use_rep != "X_pca" and not integrated:
            raise ModelFormatError(f"`{where}/has_pca` is True but `use_rep` is {use_rep!r}, not 'X_pca'.")
        if use_rep == "X" and truncated:
            raise ModelFormatError(f"`{where}/truncated` is True for `use_rep='X'`; genes are never truncated.")
        var_names = loadings = mean = None
        if use_rep == "X" or has_pca:
            var_names = _names(entry, "var_names", where)
        if has_pca:
            n_genes = var_names.shape[0]
            loadings = _array(entry, "pca_loadings", where, shape=(n_genes, n_dims)).astype(np.float32)
            mean = _array(entry, "pca_mean", where, shape=(n_genes,)).astype(np.float32)
        else:
            for key in ("pca_loadings", "pca_mean"):
                if key in entry:
                    raise ModelFormatError(f"`{where}/{key}` is present but `has_pca` is False.")
            if use_rep == "X" and var_names.shape[0] != n_dims:
                raise ModelFormatError(
                    f"`{where}/var_names` has {var_names.shape[0]} genes but the model takes {n_dims} (`use_rep='X'`)."
                )
        scale_mean, scale_std, scale_max = _scaling(entry, where, var_names)
        return cls(
            use_rep,
            n_dims,
            has_pca,
            var_names,
            loadings,
            mean,
            mismatch,
            truncated,
            integrated,
            scale_mean,
            scale_std,
            scale_max,
        )


def _scaling(entry, where: str, var_names: np.ndarray | None):
    """The optional ``sc.pp.scale`` statistics: ``(mean, std, max)``, each ``None`` when absent."""
    present = [key for key in ("scale_mean", "scale_std", "scale_max") if key in entry]
    if not present:
        return None, None, None
    if var_names is None:
        raise ModelFormatError(
            f"`{where}/{present[0]}` is present but the representation does not come from genes "
            "(`use_rep` is not 'X' and `has_pca` is False); gene scaling needs the gene names and loadings."
        )
    for key in ("scale_mean", "scale_std"):
        if key not in entry:
            raise ModelFormatError(
                f"`{where}` has `{present[0]}` but no `{key}` entry; `scale_mean` and `scale_std` come together."
            )
    n_genes = var_names.shape[0]
    mean = _array(entry, "scale_mean", where, shape=(n_genes,)).astype(np.float32)
    std = _array(entry, "scale_std", where, shape=(n_genes,)).astype(np.float32)
    if np.any(std <= 0):
        bad = ", ".join(var_names[std <= 0][:5])
        raise ModelFormatError(
            f"`{where}/scale_std` must be > 0 for every gene, got {float(std.min()):.3g} (e.g. for {bad}); "
            "`sc.pp.scale` stores 1 for constant genes. The model is corrupted."
        )
    scale_max = None
    if "scale_max" in entry:
        scale_max = _scalar(entry, "scale_max", where, float)
        if not scale_max > 0:
            raise ModelFormatError(
                f"`{where}/scale_max` (the clip value of `sc.pp.scale(max_value=...)`) must be > 0, got {scale_max}."
            )
    return mean, std, scale_max


def _string(entry, key: str, where: str) -> str:
    if key not in entry:
        raise ModelFormatError(f"`{where}` has no `{key}` entry; the model is incomplete.")
    value = entry[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value:
        got = repr(value) if isinstance(value, str) else f"{value} of type {type(value).__name__}"
        raise ModelFormatError(f"`{where}/{key}` must be a non-empty string, got {got}.")
    return str(value)


def _names(entry, key: str, where: str) -> np.ndarray:
    if key not in entry:
        raise ModelFormatError(f"`{where}` has no `{key}` entry; the model is incomplete.")
    value = np.asarray(entry[key])
    if value.ndim != 1 or value.shape[0] == 0:
        raise ModelFormatError(f"`{where}/{key}` must be a non-empty 1-D array of names, got shape {value.shape}.")
    if value.dtype.kind == "S":
        value = value.astype(str)
    if value.dtype.kind not in "UO" or not all(isinstance(v, str) for v in value.tolist()):
        raise ModelFormatError(f"`{where}/{key}` must hold strings, got dtype {value.dtype}.")
    value = value.astype(str)
    if np.unique(value).shape[0] != value.shape[0]:
        raise ModelFormatError(f"`{where}/{key}` holds duplicate names; gene names must be unique.")
    return value
