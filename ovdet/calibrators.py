"""Score calibrators, applied: a detector score s in [0, 1] -> the probability that the
detection is a true positive. Fitting them is `ovdet.calibrate.fit` (scipy); applying needs
numpy only, or torch for tensors, so the detector applies a calibration on every image
without importing scipy (and an ONNX export without importing torch).

  temperature  p = sigmoid(logit(s) / T)          one parameter; keeps 0.5 fixed
  platt        p = sigmoid(a * logit(s) + b)      two parameters (Platt 1999)
  isotonic     p = a monotone step/ramp function   non-parametric (pool adjacent violators)

All three are monotone non-decreasing in s, so the ranking within a class (and so its AP) is
unchanged; only the scale moves.
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
