"""Small building blocks shared by the networks: an MLP, seeded initialisation and the optimiser."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(n_inputs: int, hidden: tuple[int, ...], n_outputs: int) -> nn.Sequential:
    """``Linear + LeakyReLU`` hidden layers followed by a final ``Linear``."""
    layers: list[nn.Module] = []
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.1)]
        width = h
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every ``nn.Linear`` as torch does by default, but from ``generator``.

    This keeps randomness local: no global ``torch.manual_seed``.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / math.sqrt(layer.in_features)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)


def adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam over ``parameters``, by torch's fused kernel where it has one.

    The fused kernel updates every parameter in one pass instead of the default loop over
    parameters, which counts in a fit of a small graph, where a whole step takes a few ms.
    Torch releases without a fused CPU kernel (before 2.4) take the default one.
    """
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(parameters, lr=lr)
