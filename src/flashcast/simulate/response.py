"""True media response used by the simulator: geometric adstock, then a saturating curve."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

CurveForm = Literal["hill", "exponential", "log"]


def adstock(spend: NDArray[np.float64], decay: float) -> NDArray[np.float64]:
    """Geometric adstock: a_t = x_t + decay * a_{t-1}."""
    out = np.empty_like(spend, dtype=float)
    carry = 0.0
    for t, x in enumerate(spend):
        carry = float(x) + decay * carry
        out[t] = carry
    return out


def saturation(x: NDArray[np.float64], form: CurveForm, params: dict[str, float]) -> NDArray[np.float64]:
    """Saturating response in [0, 1) for hill/exponential; `log` is concave and unbounded."""
    x = np.maximum(np.asarray(x, dtype=float), 0.0)
    if form == "hill":
        k, s = params["half_saturation"], params["slope"]
        return np.asarray(x**s / (x**s + k**s))
    if form == "exponential":
        return np.asarray(1.0 - np.exp(-x / params["scale"]))
    if form == "log":
        return np.asarray(np.log1p(x / params["scale"]))
    raise ValueError(f"unknown curve form {form!r}")


@dataclass(frozen=True)
class ChannelTruth:
    """One paid channel's true response: sessions = beta * saturation(adstock(spend)) * demand."""

    channel: str
    form: CurveForm
    params: dict[str, float]
    adstock_decay: float
    beta_sessions: float
    conversion_rate: float
    base_daily_spend: float

    def expected_sessions(self, spend: NDArray[np.float64], demand: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(
            self.beta_sessions * saturation(adstock(spend, self.adstock_decay), self.form, self.params) * demand
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
