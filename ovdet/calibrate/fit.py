"""Score calibrators: a detector score s in [0, 1] -> the probability that the detection is a
true positive.

  temperature  p = sigmoid(logit(s) / T)          one parameter; keeps 0.5 fixed
  platt        p = sigmoid(a * logit(s) + b)      two parameters (Platt 1999)
  isotonic     p = a monotone step/ramp function   non-parametric (pool adjacent violators)

All three are monotone non-decreasing in s, so the ranking within a class (and so its AP) is
unchanged; only the scale moves. Fitting minimises the negative log-likelihood of the
true-positive flags (temperature, Platt) or the squared error under a monotonicity constraint
(isotonic), with scipy.optimize. Applying needs numpy only (the detector applies calibrations
on every image without importing scipy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

METHODS = ("temperature", "platt", "isotonic")
EPS = 1e-6  # scores are clipped to [EPS, 1 - EPS] before the logit: 0 and 1 have none


class Calibrator(Protocol):
    """A fitted map from scores to probabilities."""

    method: str

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """(...,) scores in [0, 1] -> (...,) float64 probabilities in [0, 1], same shape."""

    def to_dict(self) -> dict:
        """Parameters for the calibration YAML (plain floats and lists)."""

    def apply_tensor(self, scores):
        """The same map on a torch tensor of any shape, on its device and in its dtype."""


def logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(s) - np.log1p(-s)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large |x| (exp(-x) overflows for x << 0)
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True)
class Temperature:
    temperature: float
    method: str = "temperature"

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return sigmoid(logit(scores) / self.temperature)

    def linear(self) -> tuple[float, float]:
        """(a, b) with p = sigmoid(a * logit(s) + b)."""
        return 1.0 / self.temperature, 0.0

    def apply_tensor(self, scores):
        return linear_tensor(scores, *self.linear())

    def to_dict(self) -> dict:
        return {"method": self.method, "temperature": float(self.temperature)}


@dataclass(frozen=True)
class Platt:
    a: float
    b: float
    method: str = "platt"

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * logit(scores) + self.b)

    def linear(self) -> tuple[float, float]:
        return self.a, self.b

    def apply_tensor(self, scores):
        return linear_tensor(scores, *self.linear())

    def to_dict(self) -> dict:
        return {"method": self.method, "a": float(self.a), "b": float(self.b)}


@dataclass(frozen=True)
class Isotonic:
    """Piecewise-linear through the fitted points (x ascending, y non-decreasing); constant
    beyond the first and last x."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: str = "isotonic"

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        return np.interp(s, self.x, self.y)

    def apply_tensor(self, scores):
        """np.interp's semantics on a tensor: np.interp itself on a CPU (measured faster than
        torch.searchsorted plus gathers there), torch.searchsorted on other devices."""
        import torch

        if scores.device.type == "cpu":
            values = self(scores.detach().numpy())
            return torch.from_numpy(values).to(scores.dtype)
        return interp_tensor(scores, self.x, self.y)

    def to_dict(self) -> dict:
        # x at full precision: rounding could merge two close knots into a vertical step
        return {"method": self.method, "x": [float(v) for v in self.x], "y": [round(float(v), 6) for v in self.y]}


def interp_tensor(scores, x: Sequence[float], y: Sequence[float]):
    """np.interp(scores, x, y) in torch, on the scores' device (x strictly increasing). In
    float64: close knots make steep segments, where float32 knots would move values by 1e-4."""
    import torch

    xt = torch.tensor(x, dtype=torch.float64, device=scores.device)
    yt = torch.tensor(y, dtype=torch.float64, device=scores.device)
    if len(xt) == 1:
        return torch.full_like(scores, float(yt[0]))
    s = scores.double().clamp(float(xt[0]), float(xt[-1])).contiguous()
    i = torch.searchsorted(xt, s, right=True).clamp(1, len(xt) - 1)
    x0, x1, y0, y1 = xt[i - 1], xt[i], yt[i - 1], yt[i]
    return (y0 + (s - x0) / (x1 - x0) * (y1 - y0)).to(scores.dtype)


def linear_tensor(scores, a, b):
    """sigmoid(a * logit(s) + b) in torch; `a`, `b` floats or tensors broadcasting against s
    (e.g. (C,) per-class parameters for (P, C) scores)."""
    import torch

    return torch.sigmoid(a * torch.logit(scores, eps=EPS) + b)


def from_dict(data: dict) -> Calibrator:
    """Inverse of `to_dict`; raises ValueError on a malformed entry."""
    method = data.get("method")
    try:
        if method == "temperature":
            t = float(data["temperature"])
            if not t > 0:
                raise ValueError(f"temperature must be > 0, got {t}")
            return Temperature(t)
        if method == "platt":
            return Platt(float(data["a"]), float(data["b"]))
        if method == "isotonic":
            x = tuple(float(v) for v in data["x"])
            y = tuple(float(v) for v in data["y"])
            if not x or len(x) != len(y):
                raise ValueError("isotonic needs equally long, non-empty x and y lists")
            if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
                raise ValueError("isotonic x must be strictly increasing and y non-decreasing")
            return Isotonic(x, y)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{method} calibration lacks its parameters ({exc})") from None
    raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(s) != len(y) or not len(s):
        raise ValueError(f"need equally many scores and labels (> 0), got {len(s)} and {len(y)}")
    return s, y


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits z against targets y in [0, 1] (stable form)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> Temperature:
    """T minimising the NLL of sigmoid(logit(s) / T), searched on log T in [-7, 7]."""
    from scipy.optimize import minimize_scalar

    s, y = _check(scores, labels)
    z = logit(s)
    res = minimize_scalar(lambda log_t: _nll(z * np.exp(-log_t), y), bounds=(-7.0, 7.0), method="bounded",
                          options={"xatol": 1e-6})
    return Temperature(float(np.exp(res.x)))


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> Platt:
    """(a, b) minimising the NLL of sigmoid(a * logit(s) + b).

    Targets are Platt's smoothed ones, (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0:
    with a few dozen examples (a rare class) and separable data the plain maximum-likelihood
    fit runs off to infinite slope; with thousands the smoothing changes nothing visible.
    """
    from scipy.optimize import minimize

    s, y = _check(scores, labels)
    z = logit(s)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    t = np.where(pos, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        u = a * z + b
        r = sigmoid(u) - t  # d NLL / d u
        return _nll(u, t), np.array([np.mean(r * z), np.mean(r)])

    def hessian(params: np.ndarray) -> np.ndarray:
        q = sigmoid(params[0] * z + params[1])
        w = q * (1.0 - q)
        return np.array([[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]])

    # convex in (a, b) with an exact Hessian: a trust-region Newton method converges in a few
    # steps (L-BFGS-B took 10x longer per fit here, which counts with a fit per class and fold)
    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, hess=hessian, method="trust-exact")
    return Platt(float(res.x[0]), float(res.x[1]))


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> Isotonic:
    """Monotone least-squares fit (scipy's pool-adjacent-violators), kept as the end points of
    each constant block so that the file stays small and values between blocks interpolate."""
    from scipy.optimize import isotonic_regression

    s, y = _check(scores, labels)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # equal scores are one point (weighted by their count): PAV must not order ties by label
    xs, start, counts = np.unique(s, return_index=True, return_counts=True)
    means = np.add.reduceat(y, start) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    keep = np.ones(len(xs), dtype=bool)
    if len(xs) > 2:  # interior points of a flat run add nothing to the interpolation
        same_prev = np.r_[False, fitted[1:] == fitted[:-1]]
        same_next = np.r_[fitted[:-1] == fitted[1:], False]
        keep = ~(same_prev & same_next)
    return Isotonic(tuple(xs[keep].tolist()), tuple(np.clip(fitted[keep], 0.0, 1.0).tolist()))


FITTERS = {"temperature": fit_temperature, "platt": fit_platt, "isotonic": fit_isotonic}


def fit(method: str, scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Fit `method` ("temperature", "platt", "isotonic") to (N,) scores and (N,) 0/1 labels
    (1 = true positive)."""
    if method not in FITTERS:
        raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
    return FITTERS[method](scores, labels)
