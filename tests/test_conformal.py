"""Split conformal prediction sets (bridge.conformal): the threshold is the textbook finite-sample quantile,
too few calibration scores are refused, the sets cover at the level asked over many calibration/test draws
(marginally, and per class in the classwise mode), APS scores are the mass ranked at or above a class."""
from __future__ import annotations

import math

import pytest
import torch

from clipbridge.bridge.conformal import (MODES, SCORES, class_scores, classwise_thresholds, conformal_threshold,
                                         minimum_calibration_size, prediction_sets, quantile_rank,
                                         true_class_scores)
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.evaluate.fitting.choices import CONFORMAL_MODES, CONFORMAL_SCORES


def test_the_option_names_are_the_bridges():
    assert CONFORMAL_SCORES == SCORES and CONFORMAL_MODES == MODES


@pytest.mark.parametrize("n", [9, 10, 19, 20, 99, 100, 341])
@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.2, 0.5])
def test_the_threshold_is_the_textbook_finite_sample_quantile(n, alpha):
    """q = the ceil((n + 1)(1 − α))-th smallest score (Angelopoulos & Bates, 2021, eq. 1), computed here in
    exact rationals so float rounding cannot hide an off-by-one."""
    from fractions import Fraction

    rank = math.ceil((n + 1) * (1 - Fraction(alpha).limit_denominator(1000)))
    assert quantile_rank(n, alpha) == rank
    scores = torch.randperm(n).double() / n
    if rank > n:
        with pytest.raises(BridgeInputError, match="cannot guarantee"):
            conformal_threshold(scores, alpha)
    else:
        assert conformal_threshold(scores, alpha) == pytest.approx(float(scores.sort().values[rank - 1]))


@pytest.mark.parametrize("alpha, least", [(0.1, 9), (0.05, 19), (0.2, 4), (0.01, 99)])
def test_too_few_calibration_scores_are_refused_and_the_minimum_is_accepted(alpha, least):
    assert minimum_calibration_size(alpha) == least
    with pytest.raises(BridgeInputError, match=f"at least {least}"):
        conformal_threshold(torch.rand(least - 1), alpha)
    assert conformal_threshold(torch.rand(least), alpha) <= 1


def _world(seed: int, n: int, classes: int = 6):
    """Probabilities [n, C] of a miscalibrated model and labels drawn from a different (true) distribution."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, classes, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits / 1.7, -1), 1, generator=g)[:, 0]
    return torch.softmax(logits, -1), labels


@pytest.mark.parametrize("score", SCORES)
def test_marginal_sets_cover_at_the_level_over_many_draws(score):
    """Over 300 (calibration, test) draws with n = 50 calibration images, coverage averages at least 1 − α
    (minus three binomial standard errors) and at most 1 − α + 1/(n + 1) (plus the same): the guarantee and
    its upper bound for continuous scores."""
    alpha, n, trials, tests = 0.1, 50, 300, 200
    hits = []
    for trial in range(trials):
        p_cal, y_cal = _world(2 * trial, n)
        p_test, y_test = _world(2 * trial + 1, tests)
        q = conformal_threshold(true_class_scores(p_cal, y_cal, score), alpha)
        sets = prediction_sets(p_test, q, score)
        hits.append(sets[torch.arange(tests), y_test].double().mean())
    coverage = float(torch.stack(hits).mean())
    margin = 3 * math.sqrt(alpha * (1 - alpha) / (trials * tests)) + 3 * math.sqrt(alpha * (1 - alpha) / (n + 2)) / math.sqrt(trials)
    assert 1 - alpha - margin <= coverage <= 1 - alpha + 1 / (n + 1) + margin


def test_classwise_sets_cover_every_class():
    alpha, trials, tests = 0.2, 150, 600
    per_class = torch.zeros(6, dtype=torch.float64)
    counts = torch.zeros(6, dtype=torch.float64)
    for trial in range(trials):
        p_cal, y_cal = _world(1000 + 2 * trial, 300)
        p_test, y_test = _world(1001 + 2 * trial, tests)
        q = classwise_thresholds(true_class_scores(p_cal, y_cal, "lac"), y_cal, 6, alpha)
        covered = prediction_sets(p_test, q, "lac")[torch.arange(tests), y_test].double()
        per_class.index_add_(0, y_test, covered)
        counts.index_add_(0, y_test, torch.ones(tests, dtype=torch.float64))
    assert float((per_class / counts).min()) >= 1 - alpha - 0.02


def test_classwise_refuses_a_class_with_too_few_calibration_images_by_name():
    labels = torch.tensor([0] * 20 + [1] * 3)
    with pytest.raises(BridgeInputError, match="class 'tulip' has 3 calibration"):
        classwise_thresholds(torch.rand(23), labels, 2, 0.1, ["daisy", "tulip"])


def test_aps_scores_are_the_mass_ranked_at_or_above_each_class_ties_included():
    p = torch.tensor([[0.5, 0.2, 0.3, 0.0], [0.25, 0.25, 0.4, 0.1]], dtype=torch.float64)
    expected = torch.tensor([[0.5, 1.0, 0.8, 1.0], [0.9, 0.9, 0.4, 1.0]], dtype=torch.float64)
    assert torch.allclose(class_scores(p, "aps"), expected)
    assert torch.allclose(class_scores(p, "lac"), 1 - p)
    assert torch.equal(prediction_sets(p, 0.85, "aps"), torch.tensor([[True, False, True, False],
                                                                         [False, False, True, False]]))
