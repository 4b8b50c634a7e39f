"""The GPU kit's arithmetic (runs on CPU): the LIMO-hours fit and the FLOP bound, checked by hand."""
import pytest

from benchmarks.bench_gpu import LIMO_TRACES, cases, flop_bound_hours, limo_hours


def test_limo_hours_fits_linear_and_quadratic_cost():
    # s/point = 1e-4 L + 1e-9 L^2: 0.4256 s at 4096, 1.9068 s at 16384; at 6000: 0.636 s
    seconds = {4096: 1e-4 * 4096 + 1e-9 * 4096**2, 16384: 1e-4 * 16384 + 1e-9 * 16384**2}
    assert limo_hours(seconds, 6000) == pytest.approx(LIMO_TRACES * 50 * (0.6 + 0.036) / 3600)


def test_flop_bound_by_hand():
    # 7B: d 3584, 28 layers, 28 heads (128 each), 4 KV heads (kv width 512), MLP 18944
    n = 28 * (2 * 3584**2 + 2 * 3584 * 512 + 3 * 3584 * 18944)
    per_point = 4 * n * 6000 + 8 * 28 * 3584 * 6000**2
    assert flop_bound_hours("r1-distill-qwen-7b", 6000, 989.0) == pytest.approx(817 * 50 * per_point / 989e12 / 3600)
    assert 6.5e9 < n < 7.0e9  # the matmul weights of a 7.6B model without its 1.1B embedding and output rows


def test_every_case_listed():
    c = cases([4096, 16384], [1, 4])
    assert len(c) == 2 * (2 * 2 + 1) and ("paper_loop", 16384, 1, False) in c and ("engine", 4096, 4, True) in c
