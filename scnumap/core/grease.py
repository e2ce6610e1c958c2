r"""GrEASE: a learned spectral embedding that applies to new points.

A network :math:`S(x)` is trained so that, on any random batch of :math:`m` points,
its output spans the bottom eigenvectors of the batch's graph Laplacian
(SpectralNet), then a rotation separates the individual eigenvectors (GrEASE).
docs/method.md has the derivation and the measurements behind each choice.

1. The input is centred on the training mean and divided by one global scale
   (:class:`~scnumap.core.scaling.Standardizer`).
2. Network: MLP (Linear + LeakyReLU) → Linear(:math:`k+2`) → tanh. One extra column
   absorbs the trivial eigenvector, the other is a guard: the training objective fixes
   only the span, so with exactly :math:`k+1` columns the :math:`k`-th eigenvector is
   whichever member of a near-degenerate pair the batch graphs happen to rank first.
3. Batch affinity, on the device: kNN inside the batch in the chosen metric
   (Euclidean, Manhattan, or cosine, which is computed on the rows before centring, as the
   neighbour graph's is), :math:`\sigma_i` = median of
   :math:`\{0, d_{i1}, \dots, d_{ik}\}`, :math:`W_{ij} = \exp(-d_{ij}/\sigma_i)`,
   symmetrised :math:`(W + W^\top)/2`, held as a sparse matrix.
4. Loss (:func:`walk_loss`): :math:`(k+2) - \mathrm{tr}((Y^\top DY)^{-1} Y^\top D P^t Y)`
   for the lazy random walk :math:`P = (I + D^{-1}W)/2`, minimised by the bottom
   eigenvectors of the random-walk Laplacian :math:`I - D^{-1}W` (functions of the
   points, unlike the symmetric Laplacian's, which carry each batch's degrees).
   Up to ``EXACT_MAX`` points (``solver="auto"``) the network instead learns the exact
   bottom eigenvectors of the whole training graph (``eigsh``, once) through
   :func:`span_loss` on random batches: no batch graph, no walk, larger steps.
   Adam, learning rate halved on plateau of the loss on held-out rows (never in a
   training batch; when the data fit in one batch, the full-batch loss), stop at a
   minimum learning rate or the step budget.
5. Separation: on the whole training graph (up to ``FULL_SEPARATION_MAX`` points) or
   averaged over random batches, :math:`V^\top D V`, :math:`V^\top D (I - P^T) V` and the
   fit of the constant vector; remove the constant (trivial) direction explicitly
   (eigenvalue 0 repeats on a graph with several components), solve the generalised
   eigenproblem on the rest (ascending), drop the guard's direction and orthonormalise
   in that order (Gram-Schmidt), so :math:`S^\top S / n = I` on the training points.
   The walk of :math:`T \approx 1/\lambda_k` steps damps the high-frequency residue of
   the learned span, which would otherwise swap near-degenerate eigenvectors.
   With exact targets no walk runs: the span without the constant is rotated onto the
   targets (orthogonal Procrustes, :func:`aligned_to_targets`), column ``j`` the span's
   best stand-in for the ``j``-th target, whatever residue the span carries.
   The output map is the whitening :math:`W = \sqrt{m} R^{-1}` of the canonical thin QR
   (:math:`\mathrm{diag}(R) > 0`) times these rotations.
   Optional diffusion time :math:`t` scales column :math:`i` by :math:`(1-\lambda_i)^t`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import nn

from ._checks import as_matrix, check_float, check_hidden, check_int
from .batching import RowTable, as_numpy, chunks, random_rows
from .device import np_rng, resolve_device, torch_generator
from .graph import check_metric
from .layers import adam, init_parameters, mlp
from .progress import progress
from .scaling import Standardizer
from .threads import limited_threads

#: Up to this many training points, the eigenvector separation uses the whole training
#: graph (one chunked kNN search) instead of averaging random batches.
FULL_SEPARATION_MAX = 20_000

#: Longest walk of the eigenvector separation (:func:`separation_walk_steps`).
MAX_SEPARATION_WALK = 4096

#: With ``solver="auto"``, up to this many training points the network learns the exact
#: eigenvectors of the whole training graph (:func:`exact_eigenvectors`) instead of the
#: walk objective on random batches.
EXACT_MAX = FULL_SEPARATION_MAX

#: Below this many points the exact eigenvectors come from a dense solver (``eigh``).
DENSE_EIGEN_MAX = 500

SOLVERS = ("auto", "exact", "walk")

#: Default step budget and Adam learning rate of each solver (``max_steps=None``,
#: ``lr=None``). Exact targets take larger steps: on four data sets (docs/method.md,
#: "GrEASE") 300 steps at 3e-3 came as close to ``eigsh`` as 600 at 1e-3, and on six
#: (benchmarks/grease_solvers.py) 300 steps at 6e-3 came closer than at 3e-3 on every one.
DEFAULT_STEPS = {"exact": 300, "walk": 600}
DEFAULT_LR = {"exact": 6e-3, "walk": 1e-3}


def min_samples(n_components: int) -> int:
    """Fewest training samples GrEASE accepts for ``n_components`` eigenvectors: more than
    its ``n_components + 2`` network outputs (constant, eigenvectors, guard column)."""
    return n_components + 3


class SpectralNetwork(nn.Module):
    """MLP (Linear + LeakyReLU) with a tanh output of width ``n_outputs``."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden: tuple[int, ...]):
        super().__init__()
        self.layers = nn.Sequential(mlp(n_inputs, hidden, n_outputs), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def orthonormalizer(Y: torch.Tensor, ridge: float = 1e-7) -> torch.Tensor:
    """``W = sqrt(m) R^-1`` for the canonical thin QR ``Y = QR`` (``diag(R) > 0``)."""
    m, p = Y.shape
    if m < p:
        raise ValueError(f"An orthonormalisation batch needs at least {p} rows, got {m}.")
    Y64 = Y.detach().double()
    gram = Y64.T @ Y64 / m
    gram = gram + ridge * (torch.trace(gram) / p + 1e-12) * torch.eye(p, dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(gram)  # lower, positive diagonal: R / sqrt(m) = chol.T
    eye = torch.eye(p, dtype=gram.dtype, device=gram.device)
    W = torch.linalg.solve_triangular(chol.T, eye, upper=True)
    return W.to(Y.dtype)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """``(len(a), len(b))`` distances: Euclidean, Manhattan or cosine (``1 - cos``, as
    scikit-learn and umap-learn; rows of zeros count as unit-distance from everything)."""
    if metric == "manhattan":
        return torch.cdist(a, b, p=1)
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        b = torch.nn.functional.normalize(b, dim=1)
        return (1.0 - a @ b.T).clamp_min(0.0)
    return torch.cdist(a, b)


def batch_affinity(
    x: torch.Tensor, n_neighbors: int, chunk_size: int = 2048, *, metric: str = "euclidean"
) -> torch.Tensor:
    """Symmetric Laplace-kernel kNN affinity of a batch (no self loops) in ``metric``, as a
    sparse CSR float64 tensor with ``m * k`` entries rather than ``m^2``; the neighbours are
    found ``chunk_size`` rows at a time, so the full training set fits as well as a batch."""
    m = x.shape[0]
    k = min(n_neighbors, m - 1)
    found = [
        torch.topk(pairwise_distances(x[s:e], x, metric), k + 1, dim=1, largest=False) for s, e in chunks(m, chunk_size)
    ]
    values = torch.cat([v for v, _ in found])
    index = torch.cat([i for _, i in found])
    sigma = values.median(dim=1).values.clamp_min(1e-8)
    weights = torch.exp(-values / sigma[:, None])
    rows = torch.arange(m, device=x.device).repeat_interleave(k + 1)
    cols, vals = index.reshape(-1), weights.reshape(-1).double() / 2
    keep = rows != cols
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    pairs = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    with warnings.catch_warnings():  # torch's notes that sparse support is in beta
        warnings.filterwarnings("ignore", message="Sparse", category=UserWarning)
        A = torch.sparse_coo_tensor(pairs, torch.cat([vals, vals]), (m, m), check_invariants=False)
        return A.coalesce().to_sparse_csr()


def holdout_size(n: int, batch_size: int, n_outputs: int, n_neighbors: int) -> int:
    """Rows to hold out of training to watch the loss: ``min(batch_size, n // 10)`` when the
    data need more than one batch and that many rows make a graph (more than twice the
    network's outputs and the neighbours); else 0, and the full-batch loss is watched."""
    if n <= batch_size:
        return 0
    size = min(batch_size, n // 10)
    return size if size > max(2 * n_outputs, n_neighbors + 1) else 0


def lazy_walk(A: torch.Tensor, degree: torch.Tensor, Z: torch.Tensor, n_steps: int) -> torch.Tensor:
    """``P^t Z`` for the lazy random walk ``P = (I + D^-1 A) / 2``, ``A`` sparse CSR.

    ``D^-1 A`` is formed once; each step is one fused sparse product ``Z/2 + (D^-1 A) Z/2``
    (half the time of dividing every step).
    """
    crow, col = A.crow_indices(), A.col_indices()
    rows = torch.repeat_interleave(torch.arange(A.shape[0], device=A.device), crow.diff())
    walk = torch.sparse_csr_tensor(crow, col, A.values() / degree[rows], A.shape, check_invariants=False)
    for _ in range(n_steps):
        Z = torch.sparse.addmm(Z, walk, Z, beta=0.5, alpha=0.5)
    return Z


def separation_walk_steps(eigenvalue: float, minimum: int) -> int:
    """Walk length ``T`` for the separation: about ``1 / lambda_k`` (from a one-step estimate),
    so the wanted eigenvalues stay resolved (``T lambda / 2 < 1``) while residue at
    eigenvalues >= 100 lambda_k is damped; clipped to ``[minimum, MAX_SEPARATION_WALK]``."""
    if not math.isfinite(eigenvalue) or eigenvalue <= 0:
        return MAX_SEPARATION_WALK
    return int(np.clip(round(1.0 / eigenvalue), minimum, MAX_SEPARATION_WALK))


def walk_loss(out: torch.Tensor, A: torch.Tensor, n_steps: int) -> torch.Tensor:
    """``p - tr((Y^T D Y)^-1 Y^T D P^t Y)`` for the lazy random walk ``P = (I + D^-1 A) / 2``.

    Minimised exactly by the span of the bottom ``p`` eigenvectors of the random-walk
    Laplacian ``I - D^-1 A`` (the constant vector first): an eigenvalue ``lambda``
    contributes ``1 - (1 - lambda / 2)^t``. Two reasons for this form rather than the
    symmetric Laplacian's Rayleigh quotient: (1) the eigenvectors of ``I - D^-1 A`` are
    functions of the points (the trivial one is constant), while those of
    ``I - D^-1/2 A D^-1/2`` carry ``sqrt(degree)``, which changes from batch to batch, so
    no network can fit them on every batch (on two circles the exact eigenvectors scored
    10x the batch optimum); (2) ``t`` walk steps widen the gaps between small eigenvalues
    about ``t``-fold, where plain gradient descent barely separates them, and a column
    that collapses lowers the trace instead of hiding in a ridge.

    ``D P^t`` is symmetric, so the gradient needs ``P^t Y`` only at the current ``Y``:
    the walk runs without autograd and the returned value has the exact gradient.
    """
    Y = out.double()
    degree = (A @ torch.ones_like(Y[:, :1])).squeeze(1).clamp_min(1e-12)
    with torch.no_grad():
        DZ = degree[:, None] * lazy_walk(A, degree, Y.detach(), n_steps)
        fixed = Y.detach().T @ DZ
    p = Y.shape[1]
    gram = Y.T @ (degree[:, None] * Y)
    ridge = 1e-9 * (torch.trace(gram.detach()) / p + 1e-12)
    eye = torch.eye(p, dtype=Y.dtype, device=Y.device)
    cross = Y.T @ DZ  # value: Y^T D P^t Y; gradient: one side of the symmetric form
    return p - torch.trace(torch.linalg.solve(gram + ridge * eye, cross + cross.T - fixed))


def exact_eigenvectors(A: torch.Tensor, n_vectors: int, seed: int) -> np.ndarray:
    """The bottom ``n_vectors`` eigenvectors of the random-walk Laplacian ``I - D^-1 A``
    (the constant first), ``A`` a sparse CSR affinity: ``D^-1/2 phi`` for the top
    eigenvectors ``phi`` of ``D^-1/2 A D^-1/2`` (``eigsh``; ``eigh`` on small graphs),
    each column scaled to unit root mean square. ``(n, n_vectors)`` float64.

    The solver runs on one BLAS thread, so the result does not depend on the thread count
    (the sums of several threads come in another order, and a fit amplifies that).
    """
    return exact_eigenpairs(A, n_vectors, seed)[1]


def exact_eigenpairs(A: torch.Tensor, n_vectors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_eigenvectors` with their eigenvalues ``lambda`` of ``I - D^-1 A``
    (ascending, ``(n_vectors,)`` float64), computed together."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _exact_eigenpairs(A, n_vectors, seed)


def _exact_eigenpairs(A: torch.Tensor, n_vectors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = A.shape[0]
    A = A.detach().to("cpu")
    M = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n))
    root = np.sqrt(np.maximum(np.asarray(M.sum(axis=1)).ravel(), 1e-12))
    M = sp.diags(1.0 / root) @ M @ sp.diags(1.0 / root)
    if n <= DENSE_EIGEN_MAX:
        values, vectors = np.linalg.eigh(M.toarray())
        values, vectors = values[::-1][:n_vectors], vectors[:, ::-1][:, :n_vectors]
    else:
        start = np.random.default_rng(seed).standard_normal(n)  # deterministic
        values, vectors = eigsh(M, k=n_vectors, which="LA", v0=start)
        order = np.argsort(-values)
        values, vectors = values[order], vectors[:, order]
    vectors = vectors / root[:, None]
    return 1.0 - values, vectors / np.sqrt((vectors**2).mean(axis=0))


def target_overlaps(V: torch.Tensor, degree: torch.Tensor, eigenvalues: torch.Tensor, targets: torch.Tensor):
    """The exact targets without the constant direction, and their overlaps with ``V``.

    The targets' bottom eigenvalue is 0, and on a graph with several components it
    repeats, so ``eigsh``'s first columns may mix the constant with a component indicator.
    In the targets' coordinates the constant is a unit vector ``c``; the target it loads on
    most is dropped and the others, taken in eigenvalue order, are made orthogonal to ``c``
    and to each other (a QR of ``[c, e_j ...]``). With the constant first, as on a connected
    graph, that leaves the other targets as they are. Returns their eigenvalues
    (Rayleigh quotients, ``(p - 1,)``) and ``V^T D t_j / sum(D)`` for the D-normalised
    ``t_j``, ``(q, p - 1)``.
    """
    weight = degree / degree.sum()
    T = targets.to(V.dtype)
    T = T / torch.sqrt((weight[:, None] * T**2).sum(dim=0))  # D-normalised
    c = weight @ T  # the constant's coordinates <1, t_j>
    c = c / torch.linalg.vector_norm(c)
    keep = torch.ones(T.shape[1], dtype=torch.bool, device=T.device)
    keep[c.abs().argmax()] = False
    eye = torch.eye(T.shape[1], dtype=T.dtype, device=T.device)
    B = torch.linalg.qr(torch.cat([c[:, None], eye[:, keep]], dim=1))[0][:, 1:]
    values = ((B**2) * eigenvalues.to(B.dtype)[:, None]).sum(dim=0)
    return values, (V.T @ (weight[:, None] * T)) @ B


def aligned_to_targets(overlap: torch.Tensor, basis: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """The separation with exact targets: the rotation of the learned span whose ``j``-th
    column lies closest to the ``j``-th target eigenvector (orthogonal Procrustes).

    ``U = V basis chol^-T`` is the learned span without the constant direction, D-orthonormal;
    ``C = U^T D t / sum(D)`` its overlaps with the non-constant D-normalised targets ``t_j``.
    The rotation ``R`` maximising ``tr(R^T C)`` (``R = P Q^T`` for ``C = P S Q^T``) makes
    column ``j`` of ``U R`` the span's best stand-in for ``t_j``, so the columns come in the
    targets' eigenvalue order whatever residue outside the targets the span carries. A
    Rayleigh quotient of each direction instead counts that residue at a high eigenvalue;
    with many coordinates (35 on two circles) a residue of a few per cent outweighed the
    smallest eigenvalues and swapped their columns (the circle indicator came third).
    ``overlap``: from :func:`target_overlaps`. Returns the directions in the whitened
    outputs' coordinates, one column per target.
    """
    C = torch.linalg.solve_triangular(chol, basis.T @ overlap, upper=False)
    P, _, Qh = torch.linalg.svd(C)
    return basis @ torch.linalg.solve_triangular(chol.T, P @ Qh, upper=True)


def span_loss(out: torch.Tensor, target: torch.Tensor, ridge: float = 1e-9) -> torch.Tensor:
    """Share of ``target`` outside the column span of ``out``:
    ``|T - Y (Y^T Y)^-1 Y^T T|^2 / |T|^2``, zero when the network's outputs span the
    target eigenvectors, whatever linear mix of them they hold (the separation picks the
    individual eigenvectors afterwards)."""
    Y, T = out.double(), target.double()
    gram = Y.T @ Y
    eye = torch.eye(Y.shape[1], dtype=Y.dtype, device=Y.device)
    gram = gram + ridge * (torch.trace(gram.detach()) / Y.shape[1] + 1e-12) * eye
    residual = T - Y @ torch.linalg.solve(gram, Y.T @ T)
    return (residual**2).sum() / (T**2).sum()


class GrEASE:
    """Generalisable spectral embedding: a network that maps any point to the bottom
    non-trivial eigenvectors of the training data's graph Laplacian.

    Parameters
    ----------
    n_components
        Number of non-trivial eigenvectors ``k`` (typically 2–20).
    n_neighbors
        Neighbours per point in each batch's affinity (typically 5–30).
    metric
        Distance of the batch affinity: ``"euclidean"``, ``"manhattan"`` or ``"cosine"``
        (aliases ``"l2"``, ``"l1"``, ``"cityblock"``). Cosine is measured on the rows
        before centring (the angle of the data as given), as a neighbour graph built with
        ``metric="cosine"`` is; the network's input is the standardised rows either way.
    hidden
        Widths of the hidden layers.
    batch_size
        Points per batch ``m`` (affinity and orthonormalisation). 512–4096.
    max_steps
        Upper bound on gradient steps (typically 200–2,000). ``None``: 300 with the exact
        solver, 600 with the walk (``DEFAULT_STEPS``).
    lr
        Initial Adam learning rate. ``None``: 6e-3 with the exact solver, 1e-3 with the
        walk (``DEFAULT_LR``).
    min_lr
        Training stops once the plateau schedule brings the learning rate below this.
    walk_steps
        Steps ``t`` of the lazy random walk in the training objective
        (:func:`walk_loss`); more steps separate close small eigenvalues better.
    t
        Diffusion time; column ``i`` is scaled by ``(1 - lambda_i) ** t``. 0 = no scaling.
    n_separation_batches
        Random batches averaged for the eigenvector separation when the training set has
        more than ``FULL_SEPARATION_MAX`` (20,000) points; smaller sets use their whole graph.
    solver
        What the network learns. ``"exact"``: the bottom eigenvectors of the whole training
        graph, computed once by ``eigsh`` (:func:`exact_eigenvectors`), as the targets of
        :func:`span_loss` on random batches (cheap steps: no batch graph, no walk).
        ``"walk"``: :func:`walk_loss` on the graph of each random batch, which never builds
        the whole graph. ``"auto"`` (default): ``"exact"`` up to ``EXACT_MAX`` (20,000)
        training points, ``"walk"`` above. Either way new points are embedded by the
        network; docs/method.md ("GrEASE") compares the two.
    device
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or a torch device.
    n_jobs
        CPU threads of ``fit`` and ``transform``: torch's, the BLAS/OpenMP pools'
        (``threadpoolctl``) and numba's are set to ``n_jobs`` during the call and restored
        afterwards. ``-1``: all cores; ``None``: for ``fit``, the cores other processes
        leave idle (``scnumap.core.threads.free_cores``; the count of an enclosing fit when
        called from one), for ``transform``, no pool changed.
    random_state
        Seed of every random choice. The same seed, data, machine, torch version and
        number of threads (``n_jobs``; with ``n_jobs=None`` the count depends on the
        machine's load) give the same result; another thread count or device changes the
        order of floating-point sums, hence the result.
    verbose
        Show a progress bar (``tqdm.auto``) once training has run a few seconds;
        ``False`` hides it.

    Attributes
    ----------
    eigenvalues_
        ``(n_components,)`` Laplacian eigenvalues, ascending: the exact targets' own, or
        the walk's estimates.
    loss_history_
        Loss every 25 steps (:func:`span_loss` or :func:`walk_loss`, as ``solver_`` says)
        on ``holdout_size_`` held-out rows, which no training batch contains; when the data
        fit in one batch (``n_samples <= batch_size``) there is no hold-out
        (``holdout_size_ == 0``) and it is the loss on the whole data.
    solver_
        ``"exact"`` or ``"walk"``: the objective the network was trained with.
    holdout_size_
        Rows held out of training to watch the loss (``min(batch_size, n_samples // 10)``
        when the data need more than one batch, else 0).
    separation_walk_steps_
        Walk length ``T`` the separation used (:func:`separation_walk_steps`); 0 with exact
        targets, where no walk runs.
    """

    def __init__(
        self,
        n_components: int = 10,
        *,
        n_neighbors: int = 10,
        metric: str = "euclidean",
        hidden: tuple[int, ...] = (256, 256),
        batch_size: int = 1024,
        max_steps: int | None = None,
        lr: float | None = None,
        min_lr: float = 1e-5,
        walk_steps: int = 64,
        t: float = 0.0,
        n_separation_batches: int = 20,
        solver: str = "auto",
        device="auto",
        n_jobs: int | None = None,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.hidden = hidden
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.lr = lr
        self.min_lr = min_lr
        self.walk_steps = walk_steps
        self.t = t
        self.n_separation_batches = n_separation_batches
        self.solver = solver
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ checks
    def _check_params(self, n_obs: int) -> None:
        k = check_int(self.n_components, "n_components", minimum=1)
        check_int(self.n_neighbors, "n_neighbors", minimum=1)
        check_metric(self.metric)
        check_hidden(self.hidden)
        check_int(self.batch_size, "batch_size", minimum=2)
        if self.max_steps is not None:
            check_int(self.max_steps, "max_steps", minimum=1)
        if self.lr is not None:
            check_float(self.lr, "lr", minimum=0.0, strict_minimum=True)
        check_float(self.min_lr, "min_lr", minimum=0.0)
        check_int(self.walk_steps, "walk_steps", minimum=1)
        check_float(self.t, "t", minimum=0.0)
        check_int(self.n_separation_batches, "n_separation_batches", minimum=1)
        if self.solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {', '.join(map(repr, SOLVERS))}; got {self.solver!r}.")
        if n_obs < min_samples(k):
            raise ValueError(
                f"GrEASE needs more samples than `n_components + 2` ({min_samples(k) - 1}), got {n_obs}. "
                "Pass more samples or a smaller `n_components`."
            )

    # ------------------------------------------------------------------- fit
    def fit(self, X) -> GrEASE:
        """Train on ``X`` of shape ``(n_samples, n_features)``; returns ``self``."""
        with limited_threads(self.n_jobs):
            return self._fit(X)

    def _fit(self, X) -> GrEASE:
        X = as_matrix(X)
        self._check_params(X.shape[0])
        device = resolve_device(self.device)
        rng = np_rng(self.random_state)
        gen = torch_generator(rng, device)
        torch_seed = int(rng.integers(0, 2**62))
        self.standardizer_ = Standardizer.fit(X)
        table = RowTable(X, self.standardizer_, device)
        self.metric_ = check_metric(self.metric)
        self._shift = torch.as_tensor(self.standardizer_.mean / self.standardizer_.scale, device=device)
        n = X.shape[0]
        p = self.n_components + 2  # the constant, k eigenvectors and a guard column
        m = max(p + 1, min(self.batch_size, n))

        net = SpectralNetwork(X.shape[1], p, tuple(self.hidden))
        init_parameters(net, torch.Generator().manual_seed(torch_seed))
        net = net.to(device)
        self.solver_ = self._resolve_solver(n)
        graph = spectrum = None
        if self.solver_ == "exact":
            graph = self.affinity(table[torch.arange(n, device=device)])
            spectrum = self._exact_targets(graph, p, torch_seed)
            target = None if spectrum is None else spectrum[1]
        lr = DEFAULT_LR[self.solver_] if self.lr is None else self.lr
        max_steps = DEFAULT_STEPS[self.solver_] if self.max_steps is None else self.max_steps
        opt = adam(net.parameters(), lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=4)

        # rows held out of every training batch, for the plateau schedule
        order = random_rows(n, n, gen, device)
        n_val = holdout_size(n, m, p, self.n_neighbors)
        train_rows = order[n_val:]
        val_rows = order[:n_val] if n_val else order
        m_train = max(p + 1, min(m, train_rows.shape[0]))
        full_batch = train_rows.shape[0] <= m_train
        if self.solver_ == "exact":  # targets of the training rows; no batch graph

            def graph_of(x):
                return None

            def loss_of(rows, x, A):
                return span_loss(net(x), target[rows])
        else:
            graph_of = self.affinity

            def loss_of(rows, x, A):
                return walk_loss(net(x), A, self.walk_steps)

        val_x = table[val_rows]
        val_A = graph_of(val_x)
        if full_batch and n_val:
            train_x = table[train_rows]
            train_A = graph_of(train_x)
        elif full_batch:
            train_x, train_A = val_x, val_A
        eval_every = 25
        self.loss_history_ = []
        self.holdout_size_ = int(n_val)
        bar = progress(range(max_steps), "GrEASE", self.verbose)
        for step in bar:
            if full_batch:
                rows, x, A = train_rows, train_x, train_A
            else:
                rows = train_rows[random_rows(train_rows.shape[0], m_train, gen, device)]
                x = table[rows]
                with torch.no_grad():
                    A = graph_of(x)
            loss = loss_of(rows, x, A)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % eval_every == 0:
                with torch.no_grad():
                    val = float(loss_of(val_rows, val_x, val_A))
                if not math.isfinite(val):
                    raise FloatingPointError(
                        f"GrEASE training diverged at step {step + 1} (loss {val}); lower `lr` (got {lr})."
                    )
                self.loss_history_.append(val)
                sched.step(val)
                bar.set_postfix(loss=f"{val:.4f}", refresh=False)  # shown with the next update: no bar before the delay
                if opt.param_groups[0]["lr"] < self.min_lr:
                    break
        net.eval()
        self.n_steps_ = step + 1
        self.network_ = net
        self.n_features_in_ = X.shape[1]
        self._separate(table, n, m, gen, device, graph, spectrum)
        return self

    def _exact_targets(self, graph: torch.Tensor, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:func:`exact_eigenpairs` of the training graph on its device (eigenvalues,
        eigenvectors); if ``eigsh`` does not converge, ``solver="auto"`` falls back to the
        walk (``solver_``, warned; ``None``) and ``solver="exact"`` raises."""
        try:
            values, vectors = exact_eigenpairs(graph, p, seed)
            return torch.as_tensor(values, device=graph.device), torch.as_tensor(vectors, device=graph.device)
        except ArpackNoConvergence:
            if self.solver == "exact":
                raise RuntimeError(
                    "`eigsh` did not converge on the training graph; pass `solver='walk'` (or 'auto')."
                ) from None
            warnings.warn(
                "`eigsh` did not converge on the training graph; GrEASE trains with the walk objective instead.",
                RuntimeWarning,
                stacklevel=4,
            )
            self.solver_ = "walk"
            return None

    def _resolve_solver(self, n: int) -> str:
        if self.solver == "auto":
            return "exact" if n <= EXACT_MAX else "walk"
        return self.solver

    def _separate(self, table: RowTable, n: int, m: int, gen, device, graph=None, exact=None) -> None:
        """Fix the output map: rotate the learned span to individual eigenvectors.

        On the whole training graph (up to ``FULL_SEPARATION_MAX`` points) or on random
        batches, the network's whitened outputs ``V`` give ``V^T D V`` and the least-squares
        fit of the constant vector. The constant direction is the trivial eigenvector; it
        is removed explicitly (on a graph with several components eigenvalue 0 repeats, so
        "the lowest eigenvector" could be a component indicator). The rest is ordered by
        the generalised eigenproblem of ``V^T D P^T V`` against ``V^T D V`` for the lazy
        walk ``P`` (:func:`separation_walk_steps` picks ``T``): the walk damps the small
        high-frequency residue every learned span carries, which would otherwise dominate
        Rayleigh quotients of eigenvalues near 1e-4 and swap near-degenerate eigenvectors.
        ``graph``: the whole training graph's affinity, in row order, when the fit built it
        already (used only where the separation takes the whole graph). ``exact``: that
        graph's bottom eigenpairs (:func:`exact_eigenpairs`, the exact solver's targets);
        with them no walk is run and no quotient formed: the span is rotated onto the
        targets (:func:`aligned_to_targets`), the columns take the targets' eigenvalues and
        ``separation_walk_steps_`` is 0.
        A last Gram-Schmidt step in eigenvalue order makes the output orthonormal over the
        training points without changing the span of its first ``j`` columns.
        """
        net = self.network_
        k = self.n_components
        with torch.no_grad():
            sample = random_rows(n, 20_000, gen, device)
            out = torch.cat([net(table[sample[s:e]]) for s, e in chunks(sample.shape[0], 8192)]).double()
            W = orthonormalizer(out)
            p = W.shape[0]
            whole = n <= FULL_SEPARATION_MAX
            if whole:  # the whole training graph, once
                batches = [torch.arange(n, device=device)]
            else:
                batches = [random_rows(n, m, gen, device) for _ in range(self.n_separation_batches)]
            graphs = []
            for rows in batches:
                x = table[rows]
                A = graph if whole and graph is not None else self.affinity(x)
                degree = (A @ torch.ones(rows.shape[0], 1, dtype=A.dtype, device=device)).squeeze(1)
                graphs.append((A, degree, net(x).double() @ W))
            gram = sum(V.T @ V for _, _, V in graphs)
            constant = torch.linalg.solve(gram, sum(V.sum(dim=0) for _, _, V in graphs))  # V @ constant ~ 1
            mass = sum(V.T @ (d[:, None] * V) / d.sum() for _, d, V in graphs)
            # basis of the directions mass-orthogonal to the constant one
            eye = torch.eye(p, dtype=torch.float64, device=device)
            basis = torch.linalg.qr(torch.cat([(mass @ constant)[:, None], eye], dim=1))[0][:, 1:p]

            chol = torch.linalg.cholesky(basis.T @ mass @ basis)
            filtered = whole and exact is not None  # the eigenpairs of the whole graph, in row order
            if filtered:
                _, d, V = graphs[0]
                lam, overlap = target_overlaps(V, d, *exact)

            def spectrum(walk_steps: int):
                """Eigenpairs of the (p-1)-dim problem, ascending in ``1 - mu``."""
                damped = sum(V.T @ (d[:, None] * lazy_walk(A, d, V, walk_steps)) / d.sum() for A, d, V in graphs)
                reduced = torch.linalg.solve_triangular(chol, basis.T @ (mass - damped) @ basis, upper=False)
                reduced = torch.linalg.solve_triangular(chol, reduced.T, upper=False)
                values, vectors = torch.linalg.eigh((reduced + reduced.T) / 2)
                return values, basis @ torch.linalg.solve_triangular(chol.T, vectors, upper=True)

            if filtered:
                walk_steps = 0
                directions = aligned_to_targets(overlap, basis, chol)
                evals = lam[:k].clamp_min(0.0)
            else:
                one_step, _ = spectrum(1)  # 1 - mu = lambda / 2
                walk_steps = separation_walk_steps(2.0 * float(one_step[k - 1]), self.walk_steps)
                values, directions = spectrum(walk_steps)
                evals = 2.0 * (1.0 - (1.0 - values[:k].clamp(0.0, 1.0)) ** (1.0 / walk_steps))
            directions = directions[:, :k]  # the last direction is the guard column's: dropped
            directions = directions @ orthonormalizer(out @ W @ directions).double()
            # canonical signs: the largest-magnitude loading of each direction is positive
            pivot = directions.abs().argmax(dim=0)
            directions = directions * torch.sign(directions[pivot, torch.arange(k, device=device)])
            rotation = W @ directions
            if self.t > 0:
                rotation = rotation * (1.0 - evals).clamp_min(0.0) ** self.t
        self.separation_walk_steps_ = walk_steps
        self.output_map_ = rotation.float()
        self.eigenvalues_ = as_numpy(evals)

    # ------------------------------------------------------------- transform
    def _check_fitted(self) -> None:
        if not hasattr(self, "output_map_"):
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet; call `fit(X)` first.")

    def affinity(self, x_std: torch.Tensor) -> torch.Tensor:
        """:func:`batch_affinity` of standardised rows (a fitted or fitting GrEASE) in its metric;
        cosine reads the rows before centring, ``x_std + mean / scale``."""
        if self.metric_ == "cosine":
            x_std = x_std + self._shift
        return batch_affinity(x_std, self.n_neighbors, metric=self.metric_)

    def embed(self, x_std: torch.Tensor) -> torch.Tensor:
        """Spectral coordinates of already standardised rows (a tensor on the model's device)."""
        return self.network_(x_std) @ self.output_map_

    def transform(self, X, *, chunk_size: int = 65536) -> np.ndarray:
        """Spectral coordinates ``(n_samples, n_components)`` of any points, in chunks."""
        self._check_fitted()
        X = as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"`X` has {X.shape[1]} features but GrEASE was fitted on {self.n_features_in_}; "
                "pass data with the same features, in the same order."
            )
        device = self.output_map_.device
        out = np.empty((X.shape[0], self.output_map_.shape[1]), dtype=np.float32)
        with limited_threads(getattr(self, "n_jobs", None), fit=False), torch.no_grad():
            for start, stop in chunks(X.shape[0], chunk_size):
                out[start:stop] = as_numpy(self.embed(self.standardizer_.rows(X, start, stop, device)))
        return out

    def fit_transform(self, X) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)
