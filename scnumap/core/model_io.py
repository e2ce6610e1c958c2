"""A trained NUMAP model ↔ plain arrays, strings and numbers (what h5ad can store).

Loading never unpickles and never executes anything: it reads arrays, checks every
key, shape, dtype and value, and builds fresh torch modules from them. Anything
missing, malformed or from a newer format gives a :class:`ModelFormatError` (a
``ValueError``) naming the entry. The input space stored beside the networks is
validated by :meth:`scnumap.core.representation.Representation.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .encoder import Encoder
from .grease import GrEASE, SpectralNetwork
from .numap import NUMAP
from .scaling import Standardizer

#: Version of the stored layout; bump on any incompatible change. 4: the mapping
#: calibration leaves out each cell's own entry of a Scanpy graph (format 3 could count it).
#: 5: the calibration stores each reference cell's offset in the embedding (recentring).
FORMAT_VERSION = 5


class ModelFormatError(ValueError):
    """A stored model is missing, malformed or from an unknown format."""


def model_to_dict(model: NUMAP) -> dict:
    """Everything needed to run ``model.transform``, as nested dicts of numpy arrays."""
    model._check_fitted()
    grease = model.grease_
    a, b = model.ab_
    return {
        "format_version": np.int64(FORMAT_VERSION),
        "n_features": np.int64(model.n_features_in_),
        "n_components": np.int64(model.n_components),
        "n_spectral_components": np.int64(model.n_spectral_components_),
        "use_data": np.bool_(model.encoder_.use_data),
        "ab": np.array([a, b], dtype=np.float64),
        "standardizer": {
            "mean": model.standardizer_.mean.astype(np.float32),
            "scale": np.float64(model.standardizer_.scale),
        },
        "grease": {
            "layers": _layers_to_dict(grease.network_),
            "output_map": grease.output_map_.detach().cpu().numpy().astype(np.float32),
            "eigenvalues": np.asarray(grease.eigenvalues_, dtype=np.float32),
        },
        "encoder": {"layers": _layers_to_dict(model.encoder_)},
    }


def _layers_to_dict(module: nn.Module) -> dict:
    out = {}
    for i, layer in enumerate(m for m in module.modules() if isinstance(m, nn.Linear)):
        out[f"linear_{i}_weight"] = layer.weight.detach().cpu().numpy().astype(np.float32)
        out[f"linear_{i}_bias"] = layer.bias.detach().cpu().numpy().astype(np.float32)
    return out


def model_from_dict(entry, *, device="cpu", where: str = "model") -> NUMAP:
    """Rebuild a :class:`NUMAP` ready for ``transform`` from :func:`model_to_dict` output.

    Raises
    ------
    ModelFormatError
        (a ``ValueError``) if anything is missing, malformed or not finite.
    """
    if not isinstance(entry, Mapping):
        raise ModelFormatError(f"`{where}` must be a dict of arrays, got {type(entry).__name__}.")
    version = _scalar(entry, "format_version", where, int)
    if version > FORMAT_VERSION or version < 1:
        raise ModelFormatError(
            f"`{where}` has format_version {version}; this scnumap reads versions 1 to {FORMAT_VERSION}. "
            "Upgrade scnumap (`pip install -U scnumap`) or re-train the model."
        )
    n_features = _scalar(entry, "n_features", where, int, minimum=1)
    n_components = _scalar(entry, "n_components", where, int, minimum=1)
    n_spectral = _scalar(entry, "n_spectral_components", where, int, minimum=n_components)
    use_data = bool(_scalar(entry, "use_data", where, bool))
    ab = _array(entry, "ab", where, shape=(2,))
    std = _section(entry, "standardizer", where)
    mean = _array(std, "mean", f"{where}/standardizer", shape=(n_features,))
    scale = _scalar(std, "scale", f"{where}/standardizer", float)
    if not scale > 0:
        raise ModelFormatError(f"`{where}/standardizer/scale` must be > 0, got {scale}.")
    g = _section(entry, "grease", where)
    output_map = _array(g, "output_map", f"{where}/grease")
    if output_map.ndim != 2 or output_map.shape[1] != n_spectral:
        raise ModelFormatError(
            f"`{where}/grease/output_map` must have shape (network outputs, {n_spectral}), got {output_map.shape}."
        )
    eigenvalues = _array(g, "eigenvalues", f"{where}/grease", shape=(n_spectral,))
    g_linears = _linear_arrays(_section(g, "layers", f"{where}/grease"), f"{where}/grease/layers")
    _check_chain(g_linears, n_features, output_map.shape[0], f"{where}/grease/layers")
    e_linears = _linear_arrays(
        _section(_section(entry, "encoder", where), "layers", f"{where}/encoder"), f"{where}/encoder/layers"
    )
    n_in = n_features + n_spectral if use_data else n_spectral
    _check_chain(e_linears, n_in, n_components, f"{where}/encoder/layers")

    device = torch.device(device)
    grease = GrEASE(n_spectral, hidden=tuple(w.shape[0] for w, _ in g_linears[:-1]), device=device)
    grease.network_ = _load(SpectralNetwork(n_features, output_map.shape[0], grease.hidden), g_linears, device)
    grease.output_map_ = torch.as_tensor(output_map, device=device)
    grease.eigenvalues_ = eigenvalues.astype(np.float32)
    grease.standardizer_ = Standardizer(mean.astype(np.float32), float(scale))
    grease.n_features_in_ = n_features

    hidden = tuple(w.shape[0] for w, _ in e_linears[:-1])
    model = NUMAP(n_components, n_spectral_components=n_spectral, hidden=hidden, use_data=use_data, device=device)
    model.n_spectral_components_ = n_spectral
    model.grease_ = grease
    model.standardizer_ = grease.standardizer_
    model.encoder_ = _load(Encoder(n_features, n_spectral, n_components, hidden, use_data), e_linears, device)
    model.n_features_in_ = n_features
    model.ab_ = (float(ab[0]), float(ab[1]))
    return model


def _load(module: nn.Module, linears, device) -> nn.Module:
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, (w, b) in zip(layers, linears, strict=True):
            layer.weight.copy_(torch.as_tensor(w))
            layer.bias.copy_(torch.as_tensor(b))
    return module.to(device).eval()


def _section(entry, key: str, where: str) -> Mapping:
    if key not in entry:
        raise ModelFormatError(f"`{where}` has no `{key}` entry; the model is incomplete.")
    value = entry[key]
    if not isinstance(value, Mapping):
        raise ModelFormatError(f"`{where}/{key}` must be a dict, got {type(value).__name__}.")
    return value


def _array(entry, key: str, where: str, shape: tuple | None = None) -> np.ndarray:
    if key not in entry:
        raise ModelFormatError(f"`{where}` has no `{key}` entry; the model is incomplete.")
    value = np.asarray(entry[key])
    if value.dtype.kind not in "fiub":
        raise ModelFormatError(f"`{where}/{key}` must be numeric, got dtype {value.dtype}.")
    value = value.astype(np.float32 if value.dtype.kind == "f" and value.dtype.itemsize <= 4 else np.float64)
    if shape is not None and value.shape != shape:
        raise ModelFormatError(f"`{where}/{key}` must have shape {shape}, got {value.shape}.")
    if not np.all(np.isfinite(value)):
        raise ModelFormatError(f"`{where}/{key}` contains NaN or infinite values; the model is corrupted.")
    return value


def _scalar(entry, key: str, where: str, kind, minimum=None):
    """A 0-d number: ``kind`` int must be integral, bool must be a bool or 0/1."""
    value = _array(entry, key, where, shape=()).item()
    raw = np.asarray(entry[key])
    if kind is bool:
        if value not in (0, 1):
            raise ModelFormatError(f"`{where}/{key}` must be a boolean (True/False or 0/1), got {raw.item()!r}.")
        return bool(value)
    if kind is int and (raw.dtype.kind == "b" or value != int(value)):
        raise ModelFormatError(f"`{where}/{key}` must be an integer, got {raw.item()!r}.")
    value = kind(value)
    if minimum is not None and value < minimum:
        raise ModelFormatError(f"`{where}/{key}` must be >= {minimum}, got {value}.")
    return value


def _linear_arrays(layers: Mapping, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    i = 0
    while f"linear_{i}_weight" in layers:
        w = _array(layers, f"linear_{i}_weight", where)
        b = _array(layers, f"linear_{i}_bias", where)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ModelFormatError(
                f"`{where}/linear_{i}`: weight must be 2-D and bias match its rows, got {w.shape} and {b.shape}."
            )
        out.append((w, b))
        i += 1
    if not out:
        raise ModelFormatError(f"`{where}` holds no layers (expected linear_0_weight, linear_0_bias, ...).")
    extra = set(layers) - {f"linear_{j}_{p}" for j in range(i) for p in ("weight", "bias")}
    if extra:
        raise ModelFormatError(f"`{where}` has unexpected entries {sorted(extra)}.")
    return out


def _check_chain(linears, n_in: int, n_out: int, where: str) -> None:
    width = n_in
    for i, (w, _) in enumerate(linears):
        if w.shape[1] != width:
            raise ModelFormatError(f"`{where}/linear_{i}_weight` expects {w.shape[1]} inputs, but {width} arrive.")
        width = w.shape[0]
    if width != n_out:
        raise ModelFormatError(f"`{where}` ends with {width} outputs, expected {n_out}.")
