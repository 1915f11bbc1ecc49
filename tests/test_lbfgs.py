"""The batched L-BFGS solver (bridge/lbfgs.py): exact minimisers, per-problem independence, stop reasons."""
from __future__ import annotations

import pytest
import torch

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.lbfgs import CAP, DECREASE, GRADIENT, LINE_SEARCH, minimize


def quadratics(p: int, n: int, seed: int = 0):
    """P strongly convex quadratics ½ xᵀA_p x − b_pᵀx of different conditioning, and their minimisers."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(p, n, n, generator=g, dtype=torch.float64))
    spectrum = torch.logspace(0, 1, n, dtype=torch.float64) ** torch.arange(1, p + 1, dtype=torch.float64)[:, None]
    a = q @ torch.diag_embed(spectrum) @ q.transpose(1, 2)                     # condition numbers 10, 100, ...
    b = torch.randn(p, n, generator=g, dtype=torch.float64)

    def objective(x, rows):
        ax = (a[rows] @ x.unsqueeze(-1)).squeeze(-1)
        return 0.5 * (x * ax).sum(-1) - (b[rows] * x).sum(-1), ax - b[rows]

    return objective, torch.linalg.solve(a, b)


def test_every_problem_of_a_batch_reaches_its_own_minimiser():
    objective, solution = quadratics(3, 12)
    result = minimize(objective, torch.zeros(3, 12, dtype=torch.float64), tol=1e-5, ftol=0.0)
    assert (result.status == GRADIENT).all()
    torch.testing.assert_close(result.x, solution, rtol=0, atol=4e-5)    # ‖x − x*‖ ≤ ‖A⁻¹‖ ‖g‖₂, A ⪰ I
    assert len(set(result.iterations.tolist())) == 3      # harder problems took more steps, on their own


def test_a_batch_is_bitwise_the_same_computation_as_each_problem_alone():
    objective, _ = quadratics(3, 12)
    batched = minimize(objective, torch.ones(3, 12, dtype=torch.float64), tol=1e-9)
    for p in range(3):
        def alone(x, rows, p=p):
            return objective(x, rows + p)

        single = minimize(alone, torch.ones(1, 12, dtype=torch.float64), tol=1e-9)
        assert torch.equal(single.x[0], batched.x[p])
        assert single.iterations[0] == batched.iterations[p] and single.status[0] == batched.status[p]


def test_rosenbrock_valley_is_followed_to_its_minimum():
    def rosenbrock(x, rows):
        u, v = x[:, 0], x[:, 1]
        value = (1 - u) ** 2 + 100 * (v - u ** 2) ** 2
        grad = torch.stack([-2 * (1 - u) - 400 * u * (v - u ** 2), 200 * (v - u ** 2)], -1)
        return value, grad

    start = torch.tensor([[-1.2, 1.0], [2.0, -1.0]], dtype=torch.float64)
    result = minimize(rosenbrock, start, tol=1e-9)
    assert (result.status == GRADIENT).all()
    torch.testing.assert_close(result.x, torch.ones(2, 2, dtype=torch.float64), rtol=0, atol=1e-6)


def test_stop_reasons_cap_start_point_decrease_and_failed_line_search():
    objective, _ = quadratics(2, 12)
    capped = minimize(objective, torch.zeros(2, 12, dtype=torch.float64), max_iter=3, tol=0.0)
    assert capped.status.tolist() == [CAP, CAP] and capped.iterations.tolist() == [3, 3]
    loose = minimize(objective, torch.zeros(2, 12, dtype=torch.float64), tol=1e6)
    assert loose.status.tolist() == [GRADIENT, GRADIENT] and loose.iterations.tolist() == [0, 0]
    flat = minimize(objective, torch.zeros(2, 12, dtype=torch.float64), tol=0.0, ftol=1e9)
    assert flat.status.tolist() == [DECREASE, DECREASE] and flat.iterations.tolist() == [1, 1]

    def broken_second(x, rows):                 # problem 1 is NaN everywhere but at its start
        value, grad = objective(x, rows)
        moved = (rows == 1) & (x.abs().sum(-1) > 0)
        return torch.where(moved, torch.nan, value), grad

    result = minimize(broken_second, torch.zeros(2, 12, dtype=torch.float64), tol=1e-7, ftol=0.0)
    assert result.status.tolist() == [GRADIENT, LINE_SEARCH]
    assert result.iterations[1] == 0 and torch.equal(result.x[1], torch.zeros(12, dtype=torch.float64))


def test_bad_arguments_are_input_errors():
    objective, _ = quadratics(1, 3)
    with pytest.raises(BridgeInputError, match="P, n"):
        minimize(objective, torch.zeros(3))
    with pytest.raises(BridgeInputError, match="max_iter"):
        minimize(objective, torch.zeros(1, 3), max_iter=-1)
