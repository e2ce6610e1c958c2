import torch

from scnumap.core.batching import SERIAL_ADD_VALUES, add_rows, bin_sums, take_rows


def test_add_rows_in_blocks_equals_one_serial_index_add(one_torch_thread):
    gen = torch.Generator().manual_seed(0)
    n_rows = 3 * SERIAL_ADD_VALUES // 2 + 7  # rows of 2 values: four blocks, the last one partial
    index = torch.randint(0, 50, (n_rows,), generator=gen)
    values = torch.randn(n_rows, 2, generator=gen)
    expected = torch.zeros(50, 2).index_add_(0, index, values)
    out = torch.zeros(50, 2)
    assert add_rows(out, index, values) is out
    assert torch.equal(out, expected)  # the same sums in the same order


def test_take_rows_gathers_and_sums_the_gradient_of_repeated_rows():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(40, 2, generator=gen, requires_grad=True)
    index = torch.randint(0, 40, (SERIAL_ADD_VALUES // 4, 5), generator=gen)  # 2-D index, several blocks
    weights = torch.randn(*index.shape, 2, generator=gen)
    taken = take_rows(y, index)
    assert taken.shape == (*index.shape, 2)
    assert torch.equal(taken, y.detach()[index])
    (taken * weights).sum().backward()
    expected = torch.zeros(40, 2, dtype=torch.float64).index_add_(0, index.reshape(-1), weights.reshape(-1, 2).double())
    torch.testing.assert_close(y.grad.double(), expected, rtol=1e-5, atol=1e-4)


def test_take_rows_gradient_is_reproducible_on_two_threads(two_torch_threads):
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(30, 2, generator=gen)
    index = torch.randint(0, 30, (4 * SERIAL_ADD_VALUES,), generator=gen)
    weights = torch.randn(index.shape[0], 2, generator=gen)
    grads = []
    for _ in range(2):
        leaf = y.clone().requires_grad_(True)
        (take_rows(leaf, index) * weights).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])


def test_bin_sums_add_in_the_order_of_the_index(two_torch_threads):
    """Each bin gets its values added one after the other in the index's order (a float32
    running sum, bit for bit), empty bins stay 0, and two calls on two threads agree."""
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, 50, (100_000,), generator=gen)
    values = torch.randn(100_000, generator=gen) * torch.logspace(-4, 4, 100_000)
    sums = bin_sums(index, values, 60)
    expected = [torch.tensor(0.0)] * 60
    for i, v in zip(index.tolist(), values, strict=True):
        expected[i] = expected[i] + v
    assert torch.equal(sums, torch.stack(expected))
    assert torch.count_nonzero(sums[50:]) == 0
    assert torch.equal(sums, bin_sums(index, values, 60))
