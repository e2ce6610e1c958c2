"""Resolve the torch device once, at the public entry point."""

from __future__ import annotations

import torch


def resolve_device(device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch device into a device.

    ``"auto"`` picks CUDA when available, else the CPU.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device is None or device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError:
            raise ValueError(f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from None
    else:
        raise TypeError(f"`device` must be a string or torch.device, got {device!r}.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device={device!r}` asks for CUDA but torch sees no GPU. Use device='cpu' or 'auto'.")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be a CPU or CUDA device, got {device!r}.")
    return resolved


def torch_generator(random_state, device: torch.device | None = None) -> torch.Generator:
    """A local torch generator seeded from ``random_state`` (no global seeding)."""
    seed = int(np_rng(random_state).integers(0, 2**62))
    generator = torch.Generator(device="cpu" if device is None else device)
    generator.manual_seed(seed)
    return generator


def np_rng(random_state):
    """``np.random.default_rng`` from an int, None or an existing generator."""
    import numpy as np

    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, int)):
        raise TypeError(f"`random_state` must be an int, None or a numpy Generator, got {random_state!r}.")
    return np.random.default_rng(random_state)
