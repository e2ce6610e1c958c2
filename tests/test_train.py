import torch

from scnumap.core.batching import RowTable
from scnumap.core.density import NeighbourhoodSampler
from scnumap.core.encoder import Encoder
from scnumap.core.graph import build_graph
from scnumap.core.noise import HeadNoise
from scnumap.core.sampling import EdgeSampler
from scnumap.core.scaling import Standardizer
from scnumap.core.train import DensityTerm, train_embedding


def test_input_noise_is_off_while_the_density_term_is_on(blobs):
    """Noise scaled to each cell's neighbourhood works against DensMAP; it stops when it starts."""
    cpu = torch.device("cpu")
    graph = build_graph(blobs, 10)
    spectral = torch.zeros(len(blobs), 2)
    table = RowTable(blobs, Standardizer.fit(blobs), cpu, extra=spectral)
    calls = []

    def zero_spectral(x):
        calls.append(x.shape[0])
        return torch.zeros(x.shape[0], 2)

    noise = HeadNoise(torch.full((len(blobs),), 0.1), zero_spectral, blobs.shape[1])
    density = DensityTerm(
        sampler=NeighbourhoodSampler(graph.connectivities, cpu),
        r_orig=torch.randn(len(blobs), generator=torch.Generator().manual_seed(0)),
        dens_lambda=1.0,
        var_shift=0.1,
        subsample_size=10_000,
        start_step=6,
    )
    encoder = Encoder(blobs.shape[1], 2, 2, (16,))
    train_embedding(
        encoder,
        table,
        EdgeSampler(*graph.edges(), cpu),
        a=1.6,
        b=0.9,
        n_steps=10,
        batch_size=64,
        negative_sample_rate=5,
        lr=1e-3,
        generator=torch.Generator().manual_seed(0),
        noise=noise,
        density=density,
    )
    assert calls == [64] * 6  # steps 0-5 only
