"""Plots: AnnData adapters over matplotlib/Scanpy (``pl.numap``, ``pl.project``)."""

from ._numap import numap, project

__all__ = ["numap", "project"]
