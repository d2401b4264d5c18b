"""The fast quantile Huber loss equals the pairwise reference: values and gradients.

Tolerance: the loss within 1e-5 relative; each gradient tensor elementwise within 1e-5 relative
plus 1e-5 of the tensor's largest entry (an entry near zero, e.g. a quantile sitting where its
weighted pulls balance, has no meaningful relative error).
"""

from __future__ import annotations

import pytest
import torch

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.pulserl import agents as A

RTOL = 1e-5


def _inputs(case: str, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if case == "random":  # the paper's size per row, a few rows
        pred, target, kappa = randn(6, 200), randn(6, 200) * 2 + 0.5, 1.0
    elif case == "n_ne_n_prime":
        pred, target, kappa = randn(5, 7), randn(5, 13), 1.0
    elif case == "one_quantile":
        pred, target, kappa = randn(9, 1), randn(9, 1), 1.0
    elif case == "one_quantile_many_targets":
        pred, target, kappa = randn(4, 1), randn(4, 31), 1.0
    elif case == "small_kappa":
        pred, target, kappa = randn(5, 40), randn(5, 40), 0.3
    elif case == "large_kappa":
        pred, target, kappa = randn(5, 40), randn(5, 40) * 3, 7.5
    elif case == "ties":  # integer grids: t == theta and |t - theta| == kappa occur many times
        pred = torch.randint(-3, 4, (8, 50), generator=g).to(torch.float64)
        target = torch.randint(-3, 4, (8, 60), generator=g).to(torch.float64)
        kappa = 1.0
    elif case == "all_equal_targets":
        pred = randn(4, 25)
        pred[:, :5] = 0.25  # some quantiles exactly on the targets
        target, kappa = torch.full((4, 30), 0.25, dtype=torch.float64), 1.0
    elif case == "all_equal_everything":
        pred, target, kappa = torch.full((3, 10), -2.0, dtype=torch.float64), torch.full((3, 10), -2.0,
                                                                                          dtype=torch.float64), 1.0
    elif case == "huge_scale":  # returns in the millions, Huber window of 1
        pred, target, kappa = randn(6, 64) * 1e6, randn(6, 64) * 1e6, 1.0
    elif case == "huge_offset":  # large location, spread comparable to kappa: prefix sums cancel
        pred, target, kappa = 1e6 + randn(6, 64), 1e6 + randn(6, 64) * 2, 1.0
    elif case == "tiny_scale":
        pred, target, kappa = randn(6, 64) * 1e-6, randn(6, 64) * 1e-6, 1.0
    elif case == "tiny_scale_tiny_kappa":
        pred, target, kappa = randn(6, 64) * 1e-6, randn(6, 64) * 1e-6, 1e-6
    elif case == "mixed_rows":  # one batch holding a huge-scale row and a tiny-scale row
        pred, target, kappa = randn(2, 32), randn(2, 32), 1.0
        pred[0] *= 1e6
        target[0] *= 1e6
        pred[1] *= 1e-6
        target[1] *= 1e-6
    else:  # pragma: no cover
        raise AssertionError(case)
    return pred.to(dtype), target.to(dtype), kappa


CASES = ["random", "n_ne_n_prime", "one_quantile", "one_quantile_many_targets", "small_kappa", "large_kappa",
         "ties", "all_equal_targets", "all_equal_everything", "huge_scale", "huge_offset", "tiny_scale",
         "tiny_scale_tiny_kappa", "mixed_rows"]


def _loss_and_grads(fn, pred: torch.Tensor, target: torch.Tensor, kappa: float,
                    target_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    p = pred.clone().requires_grad_(True)
    t = target.clone().requires_grad_(target_grad)
    loss = fn(p, t, kappa)
    loss.backward()
    return loss.detach(), p.grad, t.grad


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    got, want = got.to(torch.float64), want.to(torch.float64)
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL * scale if scale > 0 else 1e-30, msg=what)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_sorted_loss_equals_pairwise_values_and_gradients(case: str, dtype: torch.dtype) -> None:
    pred, target, kappa = _inputs(case, dtype)
    fast = _loss_and_grads(A.quantile_huber_loss_sorted, pred, target, kappa, target_grad=True)
    assert fast[0].dtype == dtype and fast[1].dtype == dtype and fast[2].dtype == dtype
    # against the reference in the same dtype, and against the reference in float64 (the truth)
    for ref_dtype in {dtype, torch.float64}:
        ref = _loss_and_grads(A.quantile_huber_loss_pairwise, pred.to(ref_dtype), target.to(ref_dtype), kappa,
                              target_grad=True)
        _assert_close(fast[0], ref[0], f"{case} loss vs pairwise {ref_dtype}")
        _assert_close(fast[1], ref[1], f"{case} d/d pred vs pairwise {ref_dtype}")
        _assert_close(fast[2], ref[2], f"{case} d/d target vs pairwise {ref_dtype}")


@pytest.mark.parametrize("case", ["random", "ties", "huge_scale"])
def test_public_loss_dispatches_to_the_exact_fast_form_on_cpu(case: str) -> None:
    pred, target, kappa = _inputs(case, torch.float32, seed=3)
    ref = _loss_and_grads(A.quantile_huber_loss_pairwise, pred, target, kappa, target_grad=False)
    got = _loss_and_grads(A.quantile_huber_loss, pred, target, kappa, target_grad=False)
    _assert_close(got[0], ref[0], "loss")
    _assert_close(got[1], ref[1], "d/d pred")
    # a TD target that does not require grad gets none, in both forms (the reference semantics)
    assert got[2] is None and ref[2] is None


def test_loss_is_not_a_constant_and_moves_with_its_inputs() -> None:
    pred, target, kappa = _inputs("random", torch.float64)
    base = float(A.quantile_huber_loss(pred, target, kappa))
    assert base > 0
    assert float(A.quantile_huber_loss(pred + 0.1, target, kappa)) != pytest.approx(base, rel=1e-6)
    # the sorted targets are (nearly) their own quantiles: a much better fit than random quantiles
    assert float(A.quantile_huber_loss(target.sort(dim=1).values, target, kappa)) < 0.75 * base


def test_gradient_of_the_fast_form_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, t: A.quantile_huber_loss_sorted(p, t, 0.7), (pred, target))


def test_upstream_gradient_is_applied() -> None:
    pred, target, kappa = _inputs("random", torch.float64)
    p = pred.clone().requires_grad_(True)
    (3.0 * A.quantile_huber_loss_sorted(p, target, kappa)).backward()
    q = pred.clone().requires_grad_(True)
    (3.0 * A.quantile_huber_loss_pairwise(q, target, kappa)).backward()
    _assert_close(p.grad, q.grad, "scaled upstream gradient")


def test_non_finite_input_takes_the_pairwise_path_and_propagates() -> None:
    pred, target, kappa = _inputs("random", torch.float32)
    target[0, 3] = float("nan")
    assert torch.isnan(A.quantile_huber_loss(pred, target, kappa))
    assert torch.isnan(A.quantile_huber_loss_pairwise(pred, target, kappa))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(SchemaError, match="batch size"):
        A.quantile_huber_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(SchemaError, match="2-D"):
        A.quantile_huber_loss(torch.zeros(3), torch.zeros(3, 4))
    with pytest.raises(SchemaError, match="empty"):
        A.quantile_huber_loss(torch.zeros(3, 0), torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="kappa"):
        A.quantile_huber_loss(torch.zeros(3, 4), torch.zeros(3, 4), kappa=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_paths_equal_the_reference() -> None:  # pragma: no cover - no GPU on the CI machines
    pred, target, kappa = _inputs("random", torch.float32)
    ref = _loss_and_grads(A.quantile_huber_loss_pairwise, pred, target, kappa, target_grad=True)
    for fn in (A.quantile_huber_loss, A.quantile_huber_loss_sorted):
        got = _loss_and_grads(fn, pred.cuda(), target.cuda(), kappa, target_grad=True)
        for a, b, what in zip(got, ref, ("loss", "d/d pred", "d/d target")):
            _assert_close(a.cpu(), b, what)
