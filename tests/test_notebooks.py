"""Run every tutorial notebook top to bottom in quick mode (``SCNUMAP_QUICK=1``), with the
real data sets of ../shared/data where the folder is present; check that the stored notebooks
cite nothing a user's clone lacks and show no local paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: What a user's clone does not have: the project's private notes, the shared folder, local paths.
FORBIDDEN = re.compile(r"ALGORITHM\.md|\.\./shared|shared/data|/work/|/home/|/tmp/|/Users/|[A-Z]:\\\\")
NOTEBOOKS = [
    "01_two_circles.ipynb",
    "02_time_series_transition.ipynb",
    "03_reference_query.ipynb",
    "04_densmap_paul15.ipynb",
    "05_integrated_reference.ipynb",
    "06_extend_reference.ipynb",
]


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_cites_no_private_file_and_shows_no_local_path(name):
    nb = json.loads((NOTEBOOKS_DIR / name).read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        texts = ["".join(cell["source"])]
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.extend("".join(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
            texts.append("\n".join(out.get("traceback", [])))
        for text in texts:
            match = FORBIDDEN.search(text)
            assert match is None, f"{name} cell {i} shows {match.group(0)!r}: {text[:200]!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel is installed")

    # the kernel inherits this environment: quick mode, and the inline backend even where
    # CI sets MPLBACKEND=Agg (which would draw no images into the notebook)
    monkeypatch.setenv("SCNUMAP_QUICK", "1")
    if SHARED_DATA.exists():  # notebooks 3, 4 and 5 read their public data sets from $SCNUMAP_DATA
        monkeypatch.setenv("SCNUMAP_DATA", str(SHARED_DATA))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    path = NOTEBOOKS_DIR / name
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, f"{name} drew no figure"
