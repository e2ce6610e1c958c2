"""The code blocks of README.md run as written, in order, as a doc test does; docs/index.md
repeats them word for word."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/index.md"]


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_blocks_compile(name):
    blocks = python_blocks(ROOT / name)
    assert len(blocks) >= 2, f"{name} lost its quick-start blocks"
    for i, block in enumerate(blocks):
        compile(block, f"{name}[block {i}]", "exec")


def test_readme_and_docs_quick_starts_agree():
    assert python_blocks(ROOT / "README.md") == python_blocks(ROOT / "docs" / "index.md")


@pytest.mark.slow
def test_blocks_run_as_written(tmp_path, monkeypatch):
    """README.md's blocks, run in order; docs/index.md's are the same text
    (:func:`test_readme_and_docs_quick_starts_agree`), so they are not run twice."""
    import scanpy as sc

    monkeypatch.chdir(tmp_path)  # the snippets write ref.h5ad into the working directory
    previous_figdir = sc.settings.figdir
    sc.settings.figdir = tmp_path / "figures"
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, block in enumerate(python_blocks(ROOT / "README.md")):
            exec(compile(block, f"README.md[block {i}]", "exec"), namespace)
    finally:
        sc.settings.figdir = previous_figdir
        plt.close("all")

    query, ref = namespace["query"], namespace["ref"]
    assert (tmp_path / "ref.h5ad").exists()
    assert query.obsm["X_numap"].shape == (query.n_obs, 2)
    accuracy = np.mean(query.obs["bulk_labels_numap"].astype(str) == query.obs["bulk_labels"].astype(str))
    assert accuracy > 0.6, f"label transfer of the quick start: {accuracy:.3f}"
    assert ref.obsm["X_numap"].shape == (ref.n_obs, 2)
    union = namespace["union"]
    assert union.n_obs == ref.n_obs + query.n_obs
    assert np.abs(union.obsm["X_numap"][: ref.n_obs] - ref.obsm["X_numap"]).mean() < 0.1
    assert namespace["Y_reduced"].shape == (namespace["Y"].shape[0], 2)
    assert np.isfinite(namespace["Y_reduced"]).all()
