"""Tools: AnnData adapters over the core (``tl.numap``, ``tl.project``)."""

from ._numap import numap
from ._project import project

__all__ = ["numap", "project"]
