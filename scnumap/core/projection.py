"""A block of query cells through the whole projection, in one picklable object.

:class:`BlockProjector` holds what any block of query rows needs — the model, the
reference index and 2-D positions, the mapping calibration, the query-share pool, the
query correction and the reference labels — and turns a block of the query's
representation into one float32 array whose columns :class:`Layout` names (coordinates,
mapping score, labels). Nothing in it depends on the rest of the query: every global
quantity (the correction's weights, the query share's shift) is fixed before it is built.
``tl.project`` runs it block after block in the calling process, or ships it once to
each dask worker and runs it there on the chunks that worker holds
(:func:`project_dask`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .mapping import (
    SAME_CELL_DISTANCE,
    MappingCalibration,
    anchored_placement,
    label_consistent_placement,
    label_probabilities,
    neighbour_weights,
    typical_cells,
    vote,
)
from .query_share import QueryShare
from .recentring import Recentring
from .reference_index import CACHE_SIZE, ReferenceIndex, fingerprint, kept
from .reranking import moved_neighbours
from .threads import limited_threads


@dataclass(frozen=True)
class Layout:
    """Columns of a projected block: ``n_components`` coordinates, ``n_corrected``
    corrected representation columns (0 unless they are kept), the mapping score, how
    the cell was placed (0: by the network, 1: pulled in by the anchor, 2: moved among
    reference cells of its label), then for each transferred label its code (-1:
    no labelled neighbour), its probability and one probability per category."""

    n_components: int
    n_corrected: int
    n_categories: tuple[int, ...]

    @property
    def embedding(self) -> slice:
        return slice(0, self.n_components)

    @property
    def corrected(self) -> slice:
        return slice(self.n_components, self.n_components + self.n_corrected)

    @property
    def score(self) -> int:
        return self.n_components + self.n_corrected

    @property
    def moved(self) -> int:
        return self.score + 1

    def label(self, j: int) -> tuple[int, int, slice]:
        """Columns of label ``j``: code, confidence, probabilities."""
        start = self.moved + 1 + sum(2 + n for n in self.n_categories[:j])
        return start, start + 1, slice(start + 2, start + 2 + self.n_categories[j])

    @property
    def width(self) -> int:
        return self.moved + 1 + sum(2 + n for n in self.n_categories)


class SampleSearch:
    """The query sample's own search, made when the pool is built: its ``k`` nearest
    reference cells and its query shares (``None`` when the pool is not used), reused for
    blocks made of sampled rows only (a query no larger than the sample is never searched
    twice). ``corrected``: the corrected sample's ``n_neighbors`` nearest reference cells
    (distances, indices) when the sample was scored as measured and recentring searched
    it corrected; ``placed``: the network's placement of the sample's rows as the blocks
    are embedded (corrected when they are), when recentring embedded them; both reused in
    the same way."""

    def __init__(
        self,
        distances: np.ndarray,
        indices: np.ndarray,
        shares: np.ndarray | None,
        corrected: tuple[np.ndarray, np.ndarray] | None = None,
        placed: np.ndarray | None = None,
    ):
        self.distances, self.indices, self.shares = distances, indices, shares
        self.corrected, self.placed = corrected, placed


def search_width(n_neighbors: int, calibration: MappingCalibration, pool: QueryShare | None) -> int:
    """Reference cells searched per query row: enough for the vote (``n_neighbors``), the
    mapping score (``calibration.n_neighbors``) and the query share (``pool.k``)."""
    return max(int(n_neighbors), calibration.n_neighbors, pool.k if pool is not None else 0)


class EmbeddingIndex:
    """Exact kNN among the reference's 2-D coordinates, with their local radii (computed
    when first asked for)."""

    def __init__(self, ref_embedding: np.ndarray, n_neighbors: int):
        from sklearn.neighbors import NearestNeighbors

        self.k = min(n_neighbors + 1, ref_embedding.shape[0])
        self.nn = NearestNeighbors(n_neighbors=self.k).fit(ref_embedding)
        self._radius = self._own_result = None

    @property
    def radius(self) -> np.ndarray:
        if self._radius is None:
            if self.k > 1:
                d, _ = self._own()
                self._radius = np.maximum(d.mean(axis=1), 1e-12).astype(np.float32)
            else:
                self._radius = np.ones(1, np.float32)
        return self._radius

    def own_neighbors(self) -> np.ndarray:
        """``(n_reference, k)`` each reference cell's ``k = n_neighbors`` nearest others."""
        return self._own()[1]

    def _own(self):
        if self._own_result is None:
            self._own_result = self.nn.kneighbors(n_neighbors=max(self.k - 1, 1))  # each cell without itself
        return self._own_result

    def query(self, Y, n_neighbors):
        d, i = self.nn.kneighbors(Y, n_neighbors=min(n_neighbors, self.nn.n_samples_fit_))
        return d.astype(np.float32), i


_EMBEDDING_CACHE: OrderedDict[tuple, EmbeddingIndex] = OrderedDict()


def cached_embedding_index(ref_embedding: np.ndarray, n_neighbors: int) -> EmbeddingIndex:
    """An :class:`EmbeddingIndex` of ``ref_embedding``, reused while the same coordinates
    come back (the last :data:`~scnumap.core.reference_index.CACHE_SIZE`), so that projecting
    several queries onto one reference searches its cells' own 2-D neighbours once."""
    key = (fingerprint(ref_embedding), int(n_neighbors))

    def make() -> EmbeddingIndex:  # a private copy: the cache must not follow the caller's later edits
        return EmbeddingIndex(np.array(ref_embedding, dtype=np.float32), n_neighbors)

    return kept(_EMBEDDING_CACHE, key, make, CACHE_SIZE)


class BlockProjector:
    """Project, score and label blocks of query rows (see the module docstring).

    Parameters
    ----------
    model
        The fitted :class:`~scnumap.core.numap.NUMAP` (on the CPU).
    index
        The reference's :class:`~scnumap.core.reference_index.ReferenceIndex`.
    calibration
        The reference's mapping calibration.
    ref_embedding
        ``(n_reference, n_components)`` reference coordinates (anchor, 2-D vote).
    n_neighbors
        Reference cells voting for a label and anchoring the placement.
    n_queries
        Rows of the whole query (chooses exact or approximate search).
    correction
        ``None``, or an object with ``apply(block, batches)`` giving the corrected block.
    score_corrected
        Score the corrected block (integrated reference) rather than the measured one.
    keep_corrected
        Return the corrected block's columns (:attr:`Layout.corrected`).
    pool, sample, shift
        The :class:`QueryShare` (``None``: score from distances alone), the sample's
        :class:`SampleSearch` and the shift subtracted from the query shares.
    labels
        Reference code arrays (``-1``: no label), one per transferred column, with
        ``n_categories`` categories each.
    anchor
        See ``tl.project`` (``None``: the network's placement).
    embedding_index
        Vote among the 2-D neighbours (``label_space="embedding"``) instead.
    label_placement
        The reference's 2-D :class:`EmbeddingIndex`: move cells placed among reference
        cells of another type than their first transferred label
        (:func:`~scnumap.core.mapping.label_consistent_placement`); ``None``: do not.
    unknown_threshold
        Cells scoring below it (called Unknown) keep their placement (``None``: none); so
        do reference cells projected again (:data:`~scnumap.core.mapping.SAME_CELL_DISTANCE`).
    recentring
        The query sample's :class:`~scnumap.core.recentring.Recentring`: the network's
        placements are moved by its shift before the anchor (``None``: not moved); reference
        cells projected again keep their place.
    """

    def __init__(
        self,
        model,
        index: ReferenceIndex,
        calibration: MappingCalibration,
        ref_embedding: np.ndarray,
        *,
        n_neighbors: int,
        n_queries: int,
        correction=None,
        score_corrected: bool = False,
        keep_corrected: bool = False,
        pool: QueryShare | None = None,
        sample: SampleSearch | None = None,
        shift: float = 0.0,
        labels: tuple[np.ndarray, ...] = (),
        n_categories: tuple[int, ...] = (),
        anchor: float | None = None,
        embedding_index: EmbeddingIndex | None = None,
        label_placement: EmbeddingIndex | None = None,
        unknown_threshold: float | None = None,
        recentring: Recentring | None = None,
    ):
        self.model, self.index, self.calibration = model, index, calibration
        self.recentring = recentring
        self.ref_embedding = ref_embedding
        self.n_neighbors, self.n_queries = int(n_neighbors), int(n_queries)
        self.correction, self.score_corrected = correction, score_corrected
        self.pool, self.sample, self.shift = pool, sample, float(shift)
        self.labels, self.anchor, self.embedding_index = labels, anchor, embedding_index
        self.label_placement, self.unknown_threshold = label_placement, unknown_threshold
        # which reference cells sit among their own type in the map (the placement's last resort)
        self.typical = (
            typical_cells(labels[0], label_placement.own_neighbors())
            if label_placement is not None and labels and len(ref_embedding) > 1
            else None
        )
        self.k = search_width(self.n_neighbors, calibration, pool)
        n_corrected = index.space.shape[1] if keep_corrected and correction is not None else 0
        self.layout = Layout(model.n_components, n_corrected, tuple(int(n) for n in n_categories))

    def __call__(self, raw: np.ndarray, batches: np.ndarray, positions: np.ndarray, *, key=None) -> np.ndarray:
        """``(n, layout.width)`` float32 results of the query rows ``raw`` (their representation
        as measured), with their batch codes and their rows in the query sample (-1: none);
        ``key`` names the rows for the correction (:meth:`~scnumap.core.correction.QueryCorrection.add`).

        numba (pynndescent's search) and the BLAS pools use as many threads as torch: one
        on a dask worker process, whose torch starts with one thread, instead of one per core.
        """
        with limited_threads(torch.get_num_threads(), fit=False):
            return self._project(raw, batches, positions, key)

    def _project(self, raw: np.ndarray, batches: np.ndarray, positions: np.ndarray, key=None) -> np.ndarray:
        layout = self.layout
        out = np.zeros((raw.shape[0], layout.width), dtype=np.float32)
        if raw.shape[0] == 0:
            return out
        block = raw if self.correction is None else self.correction.apply(raw, batches, key=key)
        scored = block if self.score_corrected or self.correction is None else raw
        distances, indices, share = self._search(scored, np.asarray(positions))
        c = self.calibration
        statistics = c.statistics(distances[:, : c.n_neighbors], indices[:, : c.n_neighbors])
        if self.pool is None:
            score = c.score(statistics)
        else:
            score = c.score(statistics, share - self.shift, self.pool.null, self.pool.null_rows)
        out[:, layout.score] = score
        if scored is not block:
            distances, indices = self._corrected_search(raw, block, distances, indices, np.asarray(positions))
        d, i = distances[:, : self.n_neighbors], indices[:, : self.n_neighbors]
        weights = neighbour_weights(d, i, c.radius)
        placed = self._placed(block, np.asarray(positions))
        same_cell = d[:, 0] <= SAME_CELL_DISTANCE * c.radius[i[:, 0]]  # a reference cell projected again
        if self.recentring is not None:
            shift = self.recentring.shift(i)
            shift[same_cell] = 0.0
            placed = placed - shift
        how = np.zeros(block.shape[0], dtype=np.float32)
        if self.anchor is not None:
            placed, moved = anchored_placement(placed, i, weights, self.ref_embedding, float(self.anchor))
            how[moved] = 1
        out[:, layout.corrected] = block[:, : layout.n_corrected]
        if self.embedding_index is not None:
            d, i = self.embedding_index.query(placed, self.n_neighbors)
            weights = neighbour_weights(d, i, self.embedding_index.radius)
        for j, (codes, n) in enumerate(zip(self.labels, layout.n_categories, strict=True)):
            code, confidence, probabilities = layout.label(j)
            P = label_probabilities(i, weights, codes, n)
            out[:, probabilities] = P[:, :n]
            out[:, code], out[:, confidence] = vote(P, i, codes)
        if self.label_placement is not None and self.labels:
            keep = same_cell.copy()
            if self.unknown_threshold is not None:
                keep |= score < self.unknown_threshold
            label = np.rint(out[:, layout.label(0)[0]]).astype(np.int64)
            placed, moved = label_consistent_placement(
                placed,
                i,
                weights,
                self.labels[0],
                label,
                self.ref_embedding,
                self.label_placement,
                self.n_neighbors,
                keep,
                self.typical,
            )
            how[moved] = 2
        out[:, layout.embedding] = placed
        out[:, layout.moved] = how
        return out

    def _corrected_search(self, raw, block, distances, indices, positions: np.ndarray):
        """The ``n_neighbors`` nearest reference cells of the corrected rows ``block`` (scored
        as measured: ``raw``, whose search gave ``distances`` and ``indices``); found among
        those where the correction moved a row by less than the bound of
        :func:`~scnumap.core.reranking.moved_neighbours`, searched otherwise."""
        sample = self.sample
        if self._sampled(positions) and sample.corrected is not None:
            distances, indices = sample.corrected
            return distances[positions], indices[positions]
        found = moved_neighbours(self.index, raw, block, distances, indices, self.n_neighbors, n_queries=self.n_queries)
        return found[:2]

    def _sampled(self, positions: np.ndarray) -> bool:
        """Whether the block's rows (``positions``: their rows in the query sample, -1: none)
        are all in the query sample, so that what was made for the sample serves them."""
        return self.sample is not None and positions.size > 0 and bool(positions.min() >= 0)

    def _placed(self, block: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The network's placement of ``block``: the sample's, when recentring embedded every
        one of these rows already (a query no larger than the sample is embedded once)."""
        if self._sampled(positions) and self.sample.placed is not None:
            return self.sample.placed[positions]
        return self.model.transform_blocks([block], block.shape[0])

    def _search(self, scored: np.ndarray, positions: np.ndarray):
        """The ``k`` nearest reference cells of the scored rows and their query shares."""
        sample = self.sample
        if self._sampled(positions):
            shares = sample.shares[positions] if sample.shares is not None else None
            return sample.distances[positions], sample.indices[positions], shares
        distances, indices = self.index.query(scored, self.k, n_queries=self.n_queries)
        share = self.pool.share(scored, positions, distances) if self.pool is not None else None
        return distances, indices, share


def project_dask(blocks, projector: BlockProjector, batches: np.ndarray, positions: np.ndarray):
    """Run ``projector`` as one dask task per row chunk of ``blocks``.

    ``blocks`` is a dask array of the query's representation, chunked along rows only;
    ``batches`` and ``positions`` are the rows' batch codes and sample rows. The
    projector becomes one key of the graph: a distributed scheduler sends it once to each
    worker that runs a chunk, and each chunk runs where it lies.

    Returns
    -------
    A lazy ``(n, projector.layout.width)`` float32 dask array, chunked like ``blocks``.
    """
    import dask.array as da

    width = projector.layout.width
    parts = [
        da.from_delayed(task, shape=(rows, width), dtype=np.float32)
        for task, rows in _chunk_tasks(_project_block, projector, blocks, batches, positions)
    ]
    return da.concatenate(parts, axis=0)


def correction_statistics(
    blocks, correction, batches: np.ndarray, *, scheduler: str | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """The sums of ``correction.statistics`` over the row chunks of the dask array
    ``blocks``, each chunk summarised where it lies (one round of the query correction),
    computed with ``scheduler`` (see :func:`dask_scheduler`)."""
    import dask

    parts = [task for task, _ in _chunk_tasks(_block_statistics, correction, blocks, batches)]
    sums = dask.delayed(_summed)(parts)
    return sums.compute(scheduler=scheduler)


def dask_scheduler() -> str | None:
    """The scheduler for a dask query: ``None`` (dask's choice) when a ``dask.distributed``
    client is active or ``dask.config`` names one, else ``"synchronous"``.

    Without a cluster the chunks run one after the other in the calling thread, each on
    every core (torch, BLAS and pynndescent's parallel search), as a query read in chunks
    always did: dask's default thread pool would run several chunks at once, each with
    all cores' worth of threads, and numba's default threading layer refuses parallel
    calls from several threads.
    """
    import dask

    if dask.config.get("scheduler", None) is not None:
        return None
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):
        return "synchronous"
    return None


def _chunk_tasks(function, shared, blocks, *per_row: np.ndarray):
    """``(task, rows)`` for each row chunk of the dask array ``blocks``: the delayed
    ``function(shared, chunk, *rows_of_each_per_row_array)`` and the chunk's row count.
    ``shared`` becomes one key of the graph (sent once to each worker that needs it)."""
    import dask

    shipped = dask.delayed(shared, pure=False)
    start = 0
    for block, rows in zip(blocks.to_delayed().ravel(), blocks.chunks[0], strict=True):
        yield dask.delayed(function)(shipped, block, *(a[start : start + rows] for a in per_row)), rows
        start += rows


def _block_statistics(correction, block, batches):
    return correction.statistics(block, batches)


def _summed(parts):
    """Element-wise sums of the blocks' ``(A, B, n)``."""
    return tuple(sum(part[i] for part in parts) for i in range(3))


def _project_block(projector: BlockProjector, block, batches, positions) -> np.ndarray:
    return projector(block, batches, positions)
