"""Calibrators and thresholds on synthetic detections drawn from known score -> probability curves.

The bound on the held-out ECE. For a calibrator p^ fitted on independent data, detections with
scores s_i ~ S and labels y_i ~ Bernoulli(f(s_i)) (f the true curve), and B bins with weights
w_b = n_b / n:

    ECE = sum_b w_b |mean_b(y) - mean_b(p^)|
        <= sum_b w_b |mean_b(y) - mean_b(f)|  +  sum_b w_b |mean_b(f) - mean_b(p^)|
        =: noise + fit,          fit <= mean_i |f(s_i) - p^(s_i)|  (computable: f is known).

E[noise] <= sum_b w_b sqrt(1 / (4 n_b)) = (1 / 2n) sum_b sqrt(n_b) <= (1/2) sqrt(B / n) by
Cauchy-Schwarz (a label's variance is at most 1/4). One label moves `noise` by at most 1/n, so
by McDiarmid P(noise > E[noise] + t) <= exp(-2 n t^2); with t = (1/2) sqrt(B / n) that is
exp(-B / 2) < 1e-3 for B = 15. Hence the assertion ECE <= fit + sqrt(B / n).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ovdet.calibrate.fit import fit
from ovdet.calibrators import Isotonic, Platt, Temperature, from_dict, logit, sigmoid
from ovdet.calibrate.report import ECE_BINS, brier, ece
from ovdet.calibrate.thresholds import Target, TargetError, choose_threshold, evaluate_threshold, pr_curve

N = 20_000


def _ramp(s):
    """A monotone curve no parametric family here contains: flat-ish, then steep."""
    return np.clip(0.05 + 0.9 * np.where(s < 0.5, 0.3 * s, 0.15 + 1.4 * (s - 0.5)), 0.0, 1.0)


CURVES = {
    "temperature": lambda s: sigmoid(logit(s) / 2.5),  # an over-confident model
    "platt": lambda s: sigmoid(0.6 * logit(s) - 1.2),  # over-confident and biased upwards
    "isotonic": _ramp,
}
# parametric MLE: probability error O(1/sqrt(n)) ~ 0.01 at n = 20,000; isotonic: O(n^(-1/3)) ~ 0.037
FIT_BOUND = {"temperature": 0.02, "platt": 0.02, "isotonic": N ** (-1 / 3)}


def _draw(rng, curve, n=N):
    s = rng.beta(1.2, 1.5, n)
    return s, rng.random(n) < curve(s)


@pytest.mark.parametrize("method", list(CURVES))
def test_each_method_recovers_its_curve(method):
    curve = CURVES[method]
    rng = np.random.default_rng(7)
    s_fit, y_fit = _draw(rng, curve)
    s_test, y_test = _draw(rng, curve)
    calibrator = fit(method, s_fit, y_fit)
    p = calibrator(s_test)

    fit_error = float(np.mean(np.abs(p - curve(s_test))))
    assert fit_error <= FIT_BOUND[method]
    bound = fit_error + math.sqrt(ECE_BINS / N)
    assert ece(p, y_test) <= bound
    # the raw scores were far from calibrated: the fit did the work
    assert ece(s_test, y_test) > 0.1 > bound
    assert brier(p, y_test) < brier(s_test, y_test)


def test_parameters_come_back():
    rng = np.random.default_rng(3)
    s, y = _draw(rng, CURVES["temperature"], 50_000)
    assert fit("temperature", s, y).temperature == pytest.approx(2.5, rel=0.05)
    s, y = _draw(rng, CURVES["platt"], 50_000)
    platt = fit("platt", s, y)
    assert (platt.a, platt.b) == pytest.approx((0.6, -1.2), abs=0.05)


def test_isotonic_is_monotone_compact_and_handles_ties():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(5000), 2)  # many ties
    y = rng.random(5000) < s
    iso = fit("isotonic", s, y)
    assert len(iso.x) < 200  # flat runs are stored by their end points only
    grid = np.linspace(0, 1, 1001)
    assert np.all(np.diff(iso(grid)) >= -1e-12)
    # ties share one value: the mean label of the tied group, up to monotonicity
    assert iso(np.array([0.5]))[0] == pytest.approx(0.5, abs=0.1)


def test_platt_stays_finite_on_separable_data():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    platt = fit("platt", s, y)
    p = platt(s)
    assert np.all(np.isfinite([platt.a, platt.b]))
    assert 0.0 < p.min() and p.max() < 1.0  # smoothed targets: no probability of exactly 0 or 1


def test_torch_interpolation_equals_numpy():
    """The isotonic map as applied on GPUs (torch.searchsorted) equals np.interp, knots and
    values outside the fitted range included."""
    import torch

    from ovdet.calibrators import interp_tensor

    rng = np.random.default_rng(2)
    for k in (1, 2, 57):
        x = np.unique(rng.random(k) ** 3)
        y = np.sort(rng.random(len(x)))
        s = np.r_[rng.random(5000), x, 0.0, 1.0].astype(np.float32)
        got = interp_tensor(torch.from_numpy(s), x.tolist(), y.tolist()).numpy()
        np.testing.assert_allclose(got, np.interp(s.astype(np.float64), x, y), atol=1e-6)


def test_calibrators_round_trip_through_dicts():
    for calibrator in (Temperature(1.7), Platt(0.4, -0.3), Isotonic((0.1, 0.5, 0.9), (0.0, 0.25, 0.8))):
        again = from_dict(calibrator.to_dict())
        s = np.linspace(0, 1, 11)
        np.testing.assert_allclose(again(s), calibrator(s), atol=1e-6)
    with pytest.raises(ValueError):
        from_dict({"method": "temperature", "temperature": -1})
    with pytest.raises(ValueError):
        from_dict({"method": "isotonic", "x": [0.5, 0.1], "y": [0.1, 0.2]})
    with pytest.raises(ValueError):
        from_dict({"method": "magic"})


def test_target_parsing():
    assert Target.parse("precision=0.9") == Target("precision", 0.9)
    assert Target.parse("F1") == Target("f1")
    for bad in ("precision=1.5", "precision", "recall=0.5", "precision=x"):
        with pytest.raises(TargetError):
            Target.parse(bad)


def test_pr_curve_counts_ties_together():
    curve = pr_curve(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]), num_gt=4)
    np.testing.assert_array_equal(curve.scores, [0.9, 0.5, 0.1])
    np.testing.assert_array_equal(curve.tp, [1, 2, 2])
    np.testing.assert_array_equal(curve.fp, [0, 1, 2])
    point = choose_threshold(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0]), 4, Target("precision", 0.6))
    assert point.threshold == pytest.approx(0.3)  # halfway between 0.5 and 0.1: keeps both tied 0.5s
    assert (point.precision, point.recall, point.kept) == (pytest.approx(2 / 3), 0.5, 3)


def test_unreachable_precision_takes_the_most_precise_point():
    point = choose_threshold(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 1, Target("precision", 0.99))
    assert not point.reached
    assert point.precision == pytest.approx(0.5)
    assert point.threshold == pytest.approx(0.75)


def _sharp(s):
    """A curve that reaches high precision with useful recall (unlike the over-confident ones)."""
    return sigmoid(1.5 * logit(s))


@pytest.mark.parametrize("method", list(CURVES))
@pytest.mark.parametrize("precision", [0.7, 0.85])
def test_threshold_reaches_the_target_precision_on_held_out_data(method, precision):
    """The threshold chosen on one sample gives the target precision on another, within
    sampling error: the held-out precision of k kept detections has standard deviation
    sqrt(P (1 - P) / k), and the chosen point itself was estimated from k_fit detections."""
    curve = _sharp
    rng = np.random.default_rng(11)
    s_fit, y_fit = _draw(rng, curve)
    s_test, y_test = _draw(rng, curve)
    recall_of_detector = 0.9  # one object in ten is never detected: num_gt counts it anyway
    calibrator = fit(method, s_fit, y_fit)
    point = choose_threshold(calibrator(s_fit), y_fit, int(y_fit.sum() / recall_of_detector), Target("precision", precision))
    assert point.reached
    held = evaluate_threshold(calibrator(s_test), y_test, int(y_test.sum() / recall_of_detector), point.threshold)
    sigma = math.sqrt(precision * (1 - precision) * (1 / point.kept + 1 / held.kept))
    assert abs(held.precision - precision) <= 3 * sigma
    assert held.recall > 0.05  # the lowest such threshold, not a trivially high one


def test_f1_threshold_is_near_the_best_on_held_out_data():
    curve = CURVES["platt"]
    rng = np.random.default_rng(5)
    s_fit, y_fit = _draw(rng, curve)
    s_test, y_test = _draw(rng, curve)
    calibrator = fit("platt", s_fit, y_fit)
    point = choose_threshold(calibrator(s_fit), y_fit, int(y_fit.sum()), Target("f1"))
    held = evaluate_threshold(calibrator(s_test), y_test, int(y_test.sum()), point.threshold)
    best = pr_curve(calibrator(s_test), y_test, int(y_test.sum())).f1.max()
    # F1 is flat near its optimum: a threshold estimated elsewhere loses only sampling noise
    assert held.f1 >= best - 0.01
    assert point.f1 == pytest.approx(pr_curve(calibrator(s_fit), y_fit, int(y_fit.sum())).f1.max())
