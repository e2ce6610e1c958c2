"""scnumap: generalisable UMAP (NUMAP) with GrEASE and DensMAP for Scanpy."""

from . import pl, tl
from .core import NUMAP, GrEASE

__version__ = "0.1.0"

__all__ = ["NUMAP", "GrEASE", "__version__", "pl", "tl"]
