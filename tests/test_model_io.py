import copy

import numpy as np
import pytest

from scnumap.core.model_io import FORMAT_VERSION, ModelFormatError, model_from_dict, model_to_dict


def test_round_trip_gives_identical_transform(blobs, fitted_blobs):
    entry = model_to_dict(fitted_blobs)
    loaded = model_from_dict(entry)
    np.testing.assert_allclose(loaded.transform(blobs), fitted_blobs.transform(blobs), atol=1e-6)
    assert int(entry["format_version"]) == FORMAT_VERSION


def _leaves(entry, prefix=()):
    for key, value in entry.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_only_plain_arrays_are_stored(fitted_blobs):
    for path, value in _leaves(model_to_dict(fitted_blobs)):
        assert isinstance(value, np.ndarray | np.generic), path


def _set(entry, path, value):
    d = entry
    for key in path[:-1]:
        d = d[key]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format_version",), np.int64(FORMAT_VERSION + 1), "format_version 6; this scnumap reads versions 1 to 5"),
        (("format_version",), KeyError, "no `format_version` entry"),
        (("encoder",), KeyError, "no `encoder` entry"),
        (("standardizer", "mean"), np.zeros(3, dtype=np.float32), r"must have shape \(10,\)"),
        (("standardizer", "scale"), np.float64(-1.0), "scale` must be > 0"),
        (("grease", "layers", "linear_0_weight"), np.full((64, 10), np.nan, dtype=np.float32), "NaN or infinite"),
        (("encoder", "layers", "linear_1_weight"), np.zeros((64, 5), dtype=np.float32), "expects 5 inputs"),
        (("encoder", "layers", "linear_0_bias"), np.array(["x"] * 64), "must be numeric"),
        (("encoder", "layers", "evil"), np.zeros(1), "unexpected entries"),
        (("grease", "output_map"), np.zeros((11, 3), dtype=np.float32), "output_map` must have shape"),
        (("format_version",), np.float64(1.9), "`model/format_version` must be an integer, got 1.9"),
        (("n_components",), np.bool_(True), "`model/n_components` must be an integer, got True"),
        (("use_data",), np.int64(2), r"`model/use_data` must be a boolean \(True/False or 0/1\), got 2"),
    ],
)
def test_tampered_models_raise_value_error(fitted_blobs, path, value, message):
    entry = copy.deepcopy(model_to_dict(fitted_blobs))
    _set(entry, path, value)
    with pytest.raises(ValueError, match=message):
        model_from_dict(entry)
    assert issubclass(ModelFormatError, ValueError)


def test_non_dict_model_is_rejected():
    with pytest.raises(ValueError, match="must be a dict of arrays"):
        model_from_dict(b"\x80\x04pickle")


def test_integral_float_and_boolean_numbers_are_read(blobs, fitted_blobs):
    entry = copy.deepcopy(model_to_dict(fitted_blobs))
    entry["format_version"] = np.float64(1.0)
    entry["use_data"] = np.int64(int(entry["use_data"]))
    np.testing.assert_allclose(model_from_dict(entry).transform(blobs), fitted_blobs.transform(blobs), atol=1e-6)
