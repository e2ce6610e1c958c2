"""Tools: AnnData adapters over the core (``tl.numap``, ``tl.project``, ``tl.extend``)."""

from ._extend import extend
from ._numap import numap
from ._project import project

__all__ = ["extend", "numap", "project"]
