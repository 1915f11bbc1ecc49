"""Temperature scaling (bridge.calibration) and the calibration metrics (bridge.calibration_metrics): the fitted
temperature is the NLL minimiser, recovers the temperature the labels were drawn with, follows the logits'
scale, ignores padding; ECE matches torchmetrics and the reliability bins, NLL and Brier their formulas."""
from __future__ import annotations

import math

import pytest
import torch

from clipbridge.bridge.calibration import calibrated_probabilities, fit_temperature
from clipbridge.bridge.calibration_metrics import CalibrationTally
from clipbridge.evaluate.reporting.reliability import binned_ece


def _drawn(temperature: float, n: int = 6000, classes: int = 8, seed: int = 0):
    """Logits [1, n, C] and labels [1, n] drawn from softmax(logits / temperature)."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(1, n, classes, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits[0] / temperature, -1), 1, generator=g)[:, 0]
    return logits, labels[None]


def _nll(logits, labels, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits[0] / temperature, labels[0]))


@pytest.mark.parametrize("truth", [0.5, 2.0])
def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with(truth):
    logits, labels = _drawn(truth)
    fitted = float(fit_temperature(logits, labels)[0])
    assert abs(fitted / truth - 1) < 0.08


def _smoothed_nll(logits, labels, temperature: float) -> float:
    n, classes = labels.shape[1], logits.shape[-1]
    eps = 1 / (n + 2)
    targets = torch.full((n, classes), eps / (classes - 1), dtype=torch.float64)
    targets[torch.arange(n), labels[0]] = 1 - eps
    return float(-(targets * torch.log_softmax(logits[0] / temperature, -1)).sum(-1).mean())


def test_the_fitted_temperature_minimises_the_validation_nll_against_platts_targets():
    logits, labels = _drawn(1.3, n=60)
    t = float(fit_temperature(logits, labels)[0])
    best = _smoothed_nll(logits, labels, t)
    assert best <= _smoothed_nll(logits, labels, t * 0.99) and best <= _smoothed_nll(logits, labels, t * 1.01)
    plain = float(fit_temperature(logits, labels, smoothing=False)[0])
    assert _nll(logits, labels, plain) <= min(_nll(logits, labels, plain * 0.99), _nll(logits, labels, plain * 1.01))
    assert plain < t                              # the targets' prior pulls towards less confidence


def test_a_perfectly_separated_validation_set_still_gets_a_finite_temperature():
    logits = torch.eye(4, dtype=torch.float64)[None].repeat(1, 2, 1) * 5             # every query right
    labels = torch.arange(4).repeat(2)[None]
    plain = float(fit_temperature(logits, labels, smoothing=False)[0])
    smoothed = float(fit_temperature(logits, labels)[0])
    spread = float(logits[0].sub(logits[0].mean(-1, keepdim=True)).pow(2).mean().sqrt())
    assert plain == pytest.approx(spread * 1e-2, rel=1e-6)                          # the bound
    # with 8 queries the true class's target is 1 - 1/10: the fitted softmax gives it exactly that
    p = torch.softmax(logits[0] / smoothed, -1)
    assert float(p[0, 0]) == pytest.approx(0.9, abs=1e-6)


def test_the_temperature_follows_the_logits_scale_down_to_semobridge_like_spreads():
    logits, labels = _drawn(1.0, n=800)
    base = float(fit_temperature(logits, labels)[0])
    tiny = float(fit_temperature(logits * 1e-5, labels)[0])
    assert tiny == pytest.approx(base * 1e-5, rel=1e-6)


def test_padding_labels_are_ignored_and_seeds_are_fitted_apart():
    logits, labels = _drawn(0.7, n=400)
    other, other_labels = _drawn(2.5, n=400, seed=1)
    padded = torch.cat([logits, 50 * torch.randn(1, 30, 8, dtype=torch.float64)], 1)
    padded_labels = torch.cat([labels, torch.full((1, 30), -1)], 1)
    both = fit_temperature(torch.cat([padded, torch.cat([other, other[:, :30]], 1)]),
                           torch.cat([padded_labels, torch.cat([other_labels, torch.full((1, 30), -1)], 1)]))
    assert float(both[0]) == pytest.approx(float(fit_temperature(logits, labels)[0]), rel=1e-9)
    assert float(both[1]) == pytest.approx(float(fit_temperature(other, other_labels)[0]), rel=1e-9)


def _smoothed_slope(logits, labels, temperature):
    """d/db of the mean NLL against Platt's targets at b = 1 / temperature, by autograd (the definition)."""
    b = torch.tensor(1.0 / temperature, dtype=torch.float64, requires_grad=True)
    mask = labels[0] >= 0
    z, y = logits[0][mask], labels[0][mask]
    eps = 1.0 / (int(mask.sum()) + 2)
    onehot = torch.nn.functional.one_hot(y, z.shape[-1]).double()
    targets = onehot * (1 - eps) + (1 - onehot) * eps / (z.shape[-1] - 1)
    nll = -(targets * torch.log_softmax(b * z, -1)).sum(-1).mean()
    nll.backward()
    return float(b.grad), float(torch.autograd.functional.hessian(
        lambda v: -(targets * torch.log_softmax(v * z, -1)).sum(-1).mean(), b.detach()))


@pytest.mark.parametrize("trial", range(6))
def test_the_temperature_is_a_stationary_point_or_a_bound_and_found_in_few_passes(trial, monkeypatch):
    """Safeguarded Newton: the NLL's derivative vanishes at the fitted temperature (or the minimum lies past a
    bound of T / spread and T sits on it), in at most 20 passes over the logits where 64 bisection steps were
    the old cost."""
    import clipbridge.bridge.calibration as calibration

    g = torch.Generator().manual_seed(trial)
    n, classes = 40 + 50 * trial, 3 + 7 * trial
    scale = 10.0 ** (trial - 3)
    logits = scale * torch.randn(1, n, classes, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (1, n), generator=g)
    if trial % 2:                                                     # some signal: an interior minimum
        logits.scatter_add_(-1, labels[..., None], torch.full((1, n, 1), 2.0 * scale, dtype=torch.float64))
    labels[0, :5] = -1
    passes = []
    real = calibration.nll_slope
    monkeypatch.setattr(calibration, "nll_slope", lambda *a, **k: passes.append(1) or real(*a, **k))
    t = float(calibration.fit_temperature(logits, labels)[0])
    slope, curve = _smoothed_slope(logits, labels, t)
    spread = float(calibration.logit_spread(logits, labels)[0])
    at_bound = t == pytest.approx(spread * calibration.MAX_TEMPERATURE, rel=1e-12) and slope >= 0 \
        or t == pytest.approx(spread * calibration.MIN_TEMPERATURE, rel=1e-12) and slope <= 0
    assert at_bound or abs(slope) <= 1e-9 * max(1.0, curve / t)
    assert trial % 2 == 0 or not at_bound
    assert len(passes) <= 20


def test_calibrated_probabilities_keep_the_ranking_and_sum_to_one():
    logits, _ = _drawn(1.0, n=50)
    p = calibrated_probabilities(logits, torch.tensor([0.3]))
    assert torch.equal(p.argmax(-1), logits.argmax(-1))
    assert torch.allclose(p.sum(-1), torch.ones(1, 50, dtype=torch.float64))
    assert torch.allclose(p[0], torch.softmax(logits[0] / 0.3, -1))


def _tally(p, y, chunk=None):
    tally = CalibrationTally(p.shape[1])
    for start in range(0, len(y), chunk or len(y)):
        tally.update(p[start:start + (chunk or len(y))], y[start:start + (chunk or len(y))])
    return tally.result()


def test_metrics_match_their_formulas_torchmetrics_and_the_reliability_bins():
    from torchmetrics.functional.classification import multiclass_calibration_error

    g = torch.Generator().manual_seed(3)
    p = torch.softmax(2 * torch.randn(700, 6, generator=g, dtype=torch.float64), -1)
    y = torch.randint(0, 6, (700,), generator=g)
    result = _tally(p, y, chunk=128)
    onehot = torch.nn.functional.one_hot(y, 6).double()
    assert result["nll"] == pytest.approx(float(-p[torch.arange(700), y].log().mean()), rel=1e-9)
    assert result["brier"] == pytest.approx(float(((p - onehot) ** 2).sum(1).mean()), rel=1e-9)
    assert result["confidence"] == pytest.approx(float(p.max(1).values.mean()), rel=1e-9)
    assert result["accuracy"] == pytest.approx(float((p.argmax(1) == y).double().mean()), rel=1e-9)
    expected = float(multiclass_calibration_error(p.float(), y, num_classes=6, n_bins=15, norm="l1"))
    assert result["ece"] == pytest.approx(expected, abs=1e-6)
    assert binned_ece(result["bins"]) == pytest.approx(expected, abs=1e-5)
    assert sum(result["bins"]["count"]) == 700 and len(result["bins"]["count"]) == 15


def test_a_perfectly_confident_correct_model_scores_zero_and_a_wrong_one_the_maximum():
    y = torch.tensor([0, 1, 2, 1])
    right = torch.nn.functional.one_hot(y, 3).double()
    wrong = torch.nn.functional.one_hot((y + 1) % 3, 3).double()
    good, bad = _tally(right, y), _tally(wrong, y)
    assert good["ece"] == pytest.approx(0) and good["brier"] == pytest.approx(0) and good["nll"] == pytest.approx(0)
    assert bad["ece"] == pytest.approx(1) and bad["brier"] == pytest.approx(2)
    assert bad["nll"] == pytest.approx(-math.log(1e-12))


@pytest.mark.parametrize("elements", [1, 700, 1 << 16])
def test_the_slope_over_row_slices_equals_the_slope_over_the_whole_logits_bit_for_bit(elements, monkeypatch):
    """nll_slope works on row slices of SLOPE_ELEMENTS (cache-sized); each row's softmax and sums are the same
    operations as on the whole tensor, so slope and curvature equal the one-piece computation exactly, and so
    the fitted temperatures do."""
    import clipbridge.bridge.calibration as calibration

    g = torch.Generator().manual_seed(elements)
    logits = 4 * torch.randn(3, 301, 37, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 37, (3, 301), generator=g)
    labels[1, :9] = -1
    terms, mask = calibration.target_dot(logits, labels), labels >= 0
    b = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    monkeypatch.setattr(calibration, "SLOPE_ELEMENTS", 1 << 40)
    whole = calibration.nll_slope(logits, terms, mask, b, curvature=True)
    temperature = calibration.fit_temperature(logits, labels)
    monkeypatch.setattr(calibration, "SLOPE_ELEMENTS", elements)
    sliced = calibration.nll_slope(logits, terms, mask, b, curvature=True)
    assert all(torch.equal(x, y) for x, y in zip(sliced, whole))
    assert torch.equal(calibration.fit_temperature(logits, labels), temperature)
