"""Progress bars of the long phases (GrEASE, NUMAP training)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

#: A bar appears only once a phase has run this many seconds, so short fits print nothing.
PROGRESS_DELAY = 3.0


def progress(iterable, desc: str, verbose: bool):
    """A ``tqdm.auto`` bar over ``iterable`` (a widget in notebooks, text on stderr in a
    terminal), shown after ``PROGRESS_DELAY`` seconds and removed when done; none when
    ``verbose`` is false or the output is not watched live (stderr redirected to a file or
    a pipe, as in CI logs, where a bar would only add lines)."""
    return tqdm(iterable, desc=desc, disable=not (verbose and interactive()), leave=False, delay=PROGRESS_DELAY)


def interactive() -> bool:
    """Whether a live bar would be seen: a notebook kernel, or stderr is a terminal."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())
