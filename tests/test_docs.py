"""Build the Sphinx documentation with warnings as errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build(tmp_path):
    for module in ("sphinx", "myst_nb", "numpydoc", "pydata_sphinx_theme"):
        pytest.importorskip(module)
    out = tmp_path / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(ROOT / "docs"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"sphinx failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in ("tl.numap", "tl.project", "pl.numap", "pl.project", "NUMAP", "GrEASE"):
        assert name in api, f"{name} missing from api.html"
    assert (out / "generated" / "scnumap.tl.project.html").exists()
    assert (out / "method.html").exists()
    for notebook in ("01_two_circles", "02_time_series_transition", "03_reference_query", "04_densmap_paul15"):
        assert (out / "notebooks" / f"{notebook}.html").exists(), f"tutorial {notebook} not rendered"
