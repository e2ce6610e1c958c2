"""The losses of a step with their gradient written out, against autograd's gradient of the
same composition, and the alias table's edge draw against a search, in one run.

    .venv/bin/python benchmarks/step_losses.py [pbmc68k_reduced pbmc4k ...] [--repeats N] [--transfer-seeds N]

A whole-graph step (graphs of at most 5,000 cells, docs/method.md "Whole-graph steps on
small data") computes the UMAP cross-entropy of 8,192 sampled edges and their negatives
(a grouped step too, on its rows) and, in the density phase, the density term of every cell. ``scnumap.core.losses.
edge_cross_entropy`` and ``scnumap.core.density.whole_graph_density_loss`` compute them
with the gradient written out; the composition they replace (gather the rows, squared
distances, ``umap_cross_entropy``; ``embedding_log_radius`` + ``density_correlation_loss``)
is rebuilt here. Prints, per data set (its ``X_pca`` and a 15-neighbour graph):

- one loss, forward + backward, ms per call (median of 5 rounds of 100 calls), and the
  largest relative difference of the two gradients (float64);
- one draw of 8,192 edges ∝ weight (``EdgeSampler.sample``) by Walker's alias table, against
  the inverse-CDF search in the cumulative weights that it replaced, ms per call;
- whole fits (``NUMAP()``, ``NUMAP(densmap=True)``), each way, ``--repeats`` times
  (default 2; 0: none) alternating, in seconds;
- with ``--transfer-seeds N``: the held-out transfer of ``benchmarks/quality.py`` (fit
  ``NUMAP()`` on 70 %, ``transform`` the other 30 %, 15-NN vote in 2-D) on N seeded splits,
  each way: the two ways train by the same maths and differ in the rounding of float32
  sums, which shows how much of a difference between two fits is the seed's.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import numpy as np
import scanpy as sc
import torch
from datasets import LABELLED
from scaling import warm_up

from scnumap import NUMAP
from scnumap.core import metrics, train
from scnumap.core.batching import take_rows
from scnumap.core.density import (
    NeighbourhoodSampler,
    density_correlation_loss,
    embedding_log_radius,
    whole_graph_density_loss,
)
from scnumap.core.graph import graph_from_matrices
from scnumap.core.losses import edge_cross_entropy, find_ab_params, umap_cross_entropy
from scnumap.core.sampling import EdgeSampler, sample_vertices
from scnumap.core.threads import limited_threads

warnings.filterwarnings("ignore")

N_EDGES = 8192
NEGATIVES = 5


def composed_cross_entropy(y_heads, y, heads, tails, negatives, a, b):
    """The UMAP loss of the edges as autograd's composition (the code before the written-out gradient)."""
    h = take_rows(y_heads, heads)
    sq_pos = ((h - take_rows(y, tails)) ** 2).sum(dim=1)
    sq_neg = ((h[:, None, :] - take_rows(y, negatives)) ** 2).sum(dim=2)
    return umap_cross_entropy(sq_pos, sq_neg, a, b)


def composed_density(y, sampler, r_orig, a, b, var_shift):
    _, rows, cols = sampler.everything()
    return density_correlation_loss(r_orig, embedding_log_radius(y, take_rows(y, cols), rows, a, b), var_shift)


def composed_whole_density_loss(y, density, a, b):
    return composed_density(y, density.sampler, density.r_orig, a, b, density.var_shift)


def per_call_ms(loss, rounds: int = 5, calls: int = 100, backward: bool = True) -> float:
    def call():
        value = loss()
        if backward:
            value.backward()

    for _ in range(20):
        call()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - t0) / calls * 1e3)
    return float(np.median(times))


def searched_draw(sampler: EdgeSampler, size: int, generator: torch.Generator):
    """``size`` edges ∝ weight by a search in the cumulative weights (the draw before the alias table)."""
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    index = sampler._edges_at(u * sampler.total)  # the search a grouped draw still makes
    return sampler.heads[index], sampler.tails[index]


def relative_difference(f, g, inputs) -> float:
    grads_f = torch.autograd.grad(f(), inputs)
    grads_g = torch.autograd.grad(g(), inputs)
    return max(float((u - v).norm() / u.norm()) for u, v in zip(grads_f, grads_g, strict=True))


def losses(name: str, X: np.ndarray) -> list[tuple[str, float, float, float]]:
    ad = sc.AnnData(X)
    sc.pp.neighbors(ad, n_neighbors=15, use_rep="X", random_state=0)
    graph = ad.obsp["connectivities"].tocsr()
    n = graph.shape[0]
    a, b = find_ab_params(1.0, 0.1)
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    edges = EdgeSampler(*graph_from_matrices(graph, None, n_obs=n).edges(), cpu)
    heads, tails = edges.sample(N_EDGES, gen)
    negatives = sample_vertices(n, N_EDGES * NEGATIVES, gen, cpu).view(NEGATIVES, N_EDGES).T  # as a step draws them
    sampler = NeighbourhoodSampler(graph, cpu)
    r_orig = torch.randn(n, generator=gen, dtype=torch.float64)
    y64 = (3 * torch.randn(n, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)
    noisy64 = (y64.detach() + 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y, noisy, r32 = (
        y64.detach().float().requires_grad_(True),
        noisy64.detach().float().requires_grad_(True),
        r_orig.float(),
    )
    rows = []
    with limited_threads(None):
        rows.append(
            (
                f"UMAP cross-entropy, {N_EDGES:,} edges × (1 + {NEGATIVES})",
                per_call_ms(lambda: composed_cross_entropy(noisy * 1.0, y * 1.0, heads, tails, negatives, a, b)),
                per_call_ms(lambda: edge_cross_entropy(noisy * 1.0, y * 1.0, heads, tails, negatives, a, b)),
                relative_difference(
                    lambda: composed_cross_entropy(noisy64, y64, heads, tails, negatives, a, b),
                    lambda: edge_cross_entropy(noisy64, y64, heads, tails, negatives, a, b),
                    (noisy64, y64),
                ),
            )
        )
        rows.append(
            (
                f"density term, {n:,} cells, {graph.nnz:,} edges",
                per_call_ms(lambda: composed_density(y * 1.0, sampler, r32, a, b, 0.1)),
                per_call_ms(lambda: whole_graph_density_loss(y * 1.0, sampler, r32, a, b, 0.1)),
                relative_difference(
                    lambda: composed_density(y64, sampler, r_orig, a, b, 0.1),
                    lambda: whole_graph_density_loss(y64, sampler, r_orig, a, b, 0.1),
                    (y64,),
                ),
            )
        )
        rows.append(
            (
                f"draw of {N_EDGES:,} edges of {edges.n_edges:,} (search in the cumulative weights; alias table)",
                per_call_ms(lambda: searched_draw(edges, N_EDGES, gen), backward=False),
                per_call_ms(lambda: edges.sample(N_EDGES, gen), backward=False),
                float("nan"),
            )
        )
    return rows


@contextlib.contextmanager
def losses_of(way: str):
    """``train`` computes a whole-graph step's losses the ``way`` given (``"composed"`` or
    ``"written out"``) inside the block; the written-out losses are back afterwards."""
    written = (train.edge_cross_entropy, train._whole_density_loss)
    ways = {"composed": (composed_cross_entropy, composed_whole_density_loss), "written out": written}
    train.edge_cross_entropy, train._whole_density_loss = ways[way]
    try:
        yield
    finally:
        train.edge_cross_entropy, train._whole_density_loss = written


WAYS = ("composed", "written out")


def fits(X: np.ndarray, repeats: int) -> dict[tuple[str, bool], list[float]]:
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(repeats):
        for way in WAYS:
            with losses_of(way):
                for densmap in (False, True):
                    t0 = time.perf_counter()
                    NUMAP(random_state=0, densmap=densmap, device="cpu", verbose=False).fit(X)
                    times.setdefault((way, densmap), []).append(time.perf_counter() - t0)
    return times


def transfer(X: np.ndarray, labels: np.ndarray, seeds: int) -> dict[str, list[float]]:
    """Held-out transfer accuracy per seeded 70/30 split, each way (as ``quality.transfer``)."""
    accuracy: dict[str, list[float]] = {way: [] for way in WAYS}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(X))
        fit_rows, held_out = order[: int(0.7 * len(X))], order[int(0.7 * len(X)) :]
        for way in WAYS:
            with losses_of(way):
                model = NUMAP(random_state=seed, device="cpu", verbose=False).fit(X[fit_rows])
            accuracy[way].append(
                metrics.label_transfer_accuracy(
                    model.embedding_, labels[fit_rows], model.transform(X[held_out]), labels[held_out]
                )
            )
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", default=["pbmc68k_reduced", "pbmc4k"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--transfer-seeds", type=int, default=0)
    args = parser.parse_args()
    warm_up(peers=False)
    for name in args.sets:
        ad = LABELLED[name]()
        X = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
        print(f"\n### {name}: {X.shape[0]} cells × {X.shape[1]} dims\n", flush=True)
        print("| call (loss: forward + backward) | composed (draw: search), ms | now, ms | gradients differ by |")
        print("|---|---|---|---|")
        for label, old, new, diff in losses(name, X):
            print(f"| {label} | {old:.2f} | {new:.2f} | {'–' if np.isnan(diff) else f'{diff:.1e}'} |", flush=True)
        if args.repeats:
            times = fits(X, args.repeats)
            print("\n| fit | autograd's composition, s | written out, s |")
            print("|---|---|---|")
            for densmap in (False, True):
                old = ", ".join(f"{t:.1f}" for t in times[("composed", densmap)])
                new = ", ".join(f"{t:.1f}" for t in times[("written out", densmap)])
                print(f"| NUMAP{'(densmap=True)' if densmap else '()'} | {old} | {new} |", flush=True)
        if args.transfer_seeds:
            accuracy = transfer(X, ad.obs["label"].astype(str).to_numpy(), args.transfer_seeds)
            print("\n| held-out transfer, `NUMAP()` | per seed | mean of seeds 0–2 | mean | sd |")
            print("|---|---|---|---|---|")
            for way, values in accuracy.items():
                print(
                    f"| {way} | {', '.join(f'{v:.3f}' for v in values)} | {np.mean(values[:3]):.3f} "
                    f"| {np.mean(values):.3f} | {np.std(values):.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
