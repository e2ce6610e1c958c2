"""scnumap: generalisable UMAP (NUMAP) with GrEASE and DensMAP for Scanpy.

``scnumap.NUMAP`` and ``scnumap.GrEASE`` are the estimators (no AnnData needed);
``scnumap.tl`` and ``scnumap.pl`` are the Scanpy adapters, imported on first use so
that the estimator API loads without scanpy.
"""

import importlib

from .core import NUMAP, GrEASE

__version__ = "0.1.0"

__all__ = ["NUMAP", "GrEASE", "__version__", "pl", "tl"]


def __getattr__(name: str):
    if name in ("tl", "pl"):
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'scnumap' has no attribute {name!r}")
