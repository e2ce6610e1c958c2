"""The method itself: graph, GrEASE, UMAP loss, DensMAP, training, models. No AnnData here."""

from .grease import GrEASE
from .numap import NUMAP

__all__ = ["NUMAP", "GrEASE"]
