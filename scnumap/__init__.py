"""scnumap: generalisable UMAP (NUMAP) with DensMAP for Scanpy."""

from .core import NUMAP, GrEASE

__version__ = "0.1.0"

__all__ = ["NUMAP", "GrEASE", "__version__"]
