import numpy as np
import torch

from etl.stages.compute.pooling import cls_pool, max_pool, mean_pool, pool
from etl.stages.write.vectors import l2_normalize


def _batch():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    return hidden, mask


def test_mean_and_max_ignore_padding_whatever_it_holds():
    hidden, mask = _batch()
    noisy = hidden.clone()
    noisy[mask == 0] = 1e6  # garbage in padded positions must not leak
    for fn in (mean_pool, max_pool):
        torch.testing.assert_close(fn(noisy, mask), fn(hidden, mask))


def test_pooling_matches_the_definition_row_by_row():
    hidden, mask = _batch()
    for row in range(3):
        real = hidden[row, : int(mask[row].sum())]
        torch.testing.assert_close(mean_pool(hidden, mask)[row], real.mean(0))
        torch.testing.assert_close(max_pool(hidden, mask)[row], real.max(0).values)
        torch.testing.assert_close(cls_pool(hidden, mask)[row], hidden[row, 0])


def test_pooling_does_not_modify_inputs_and_returns_float32():
    hidden, mask = _batch()
    hidden16 = hidden.to(torch.bfloat16)
    before_h, before_m = hidden16.clone(), mask.clone()
    for how in ("mean", "max", "cls"):
        out = pool(hidden16, mask, how)
        assert out.dtype == torch.float32 and out.shape == (3, 4)
    assert torch.equal(hidden16, before_h) and torch.equal(mask, before_m)


def test_l2_normalize_unit_rows_and_zero_row_stays_zero():
    v = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(v)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1.3e-6, atol=1e-5)
    assert np.array_equal(out[1], np.zeros(2))
