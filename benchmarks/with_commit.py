"""Run a benchmark script with the scnumap package of another checkout (a commit before).

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/with_commit.py /tmp/before benchmarks/circles.py --seeds 0 1

The editable install (``pip install -e .``) puts a finder on ``sys.meta_path`` that outranks
``PYTHONPATH``, so ``PYTHONPATH=/tmp/before`` still imports this checkout's package. This
wrapper removes that finder, puts the other checkout first on the import path and runs the
script (this checkout's copy, with its arguments) as ``__main__``; the script prints which
package it measured on stderr. RESULTS.md's comparisons "on the code before" ran this way.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    checkout, script, *args = sys.argv[1:]
    if not (Path(checkout) / "scnumap" / "__init__.py").exists():
        sys.exit(f"{checkout!r} has no scnumap package; pass the root of a checkout (git worktree add DIR COMMIT).")
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]
    sys.path[:0] = [str(Path(checkout).resolve()), str(Path(script).resolve().parent)]
    import scnumap

    print(f"scnumap from {Path(scnumap.__file__).parent}", file=sys.stderr)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
