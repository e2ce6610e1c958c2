import numpy as np

from scnumap.core import metrics


def test_other_label_share_is_zero_for_groups_apart_and_counts_mixed_points():
    rng = np.random.default_rng(0)
    apart = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(100, 1, (50, 2))])
    labels = np.repeat([0, 1], 50)
    assert metrics.other_label_share(apart, labels) == 0.0
    # one point of group 1 moved into group 0: it and the group-0 points near it see another label
    mixed = apart.copy()
    mixed[50] = 0.0
    share = metrics.other_label_share(mixed, labels)
    assert 1 / 100 < share < 1.0
    # one shared cloud: every point has a neighbour of the other label
    assert metrics.other_label_share(rng.normal(0, 1, (100, 2)), labels[rng.permutation(100)]) == 1.0
