import torch

from tslayers.objectives.collapse import effective_rank


def test_effective_rank_spans_collapse_to_full():
    torch.manual_seed(0)
    v = torch.randn(1, 16)
    assert effective_rank(torch.randn(200, 1) * v) < 1.01  # all rows one direction
    assert abs(effective_rank(torch.eye(16)) - 16) < 1e-6
    iso = effective_rank(torch.randn(4000, 16))
    assert 14.5 < iso <= 16
    low = torch.randn(500, 3) @ torch.randn(3, 16)
    rank = effective_rank(low)
    assert rank > 1.5 and rank < 3.01  # rank 3, unequal singular values
