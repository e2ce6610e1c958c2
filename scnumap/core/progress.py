"""Progress bars of the long phases (GrEASE, NUMAP training)."""

from __future__ import annotations

from tqdm.auto import tqdm

#: A bar appears only once a phase has run this many seconds, so short fits print nothing.
PROGRESS_DELAY = 3.0


def progress(iterable, desc: str, verbose: bool):
    """A ``tqdm.auto`` bar over ``iterable`` (a widget in notebooks, text on stderr in a
    terminal), shown after ``PROGRESS_DELAY`` seconds and removed when done; none when
    ``verbose`` is false."""
    return tqdm(iterable, desc=desc, disable=not verbose, leave=False, delay=PROGRESS_DELAY)
