"""What the allocator takes and returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelHistory:
    """A paid channel's recent record: yesterday's spend, and spend and conversions over the lookback."""

    channel: str
    yesterday_spend: float
    lookback_spend: float
    lookback_conversions: float


@dataclass(frozen=True)
class ChannelBounds:
    """A channel's spend interval for the day and the guardrail behind each side."""

    lower: float
    upper: float
    lower_rule: str
    upper_rule: str


@dataclass(frozen=True)
class AllocationRow:
    channel: str
    yesterday_spend: float
    lookback_spend: float
    conversions: float
    cpa: float | None
    raw_weight: float
    target_spend: float
    spend: float
    share: float
    change: float
    lower: float
    upper: float
    bound: str | None  # the guardrail that holds this channel, if any
    why: str
    marginal_cpa: float | None = None  # cost of one more conversion at the proposed spend (curves)
    expected_conversions: float | None = None  # at the proposed spend, per day (curves)
    expected_low: float | None = None  # 80% interval from the curve's bootstrap draws
    expected_high: float | None = None


@dataclass(frozen=True)
class Allocation:
    method: str
    budget: float
    rows: tuple[AllocationRow, ...]
    expected_conversions: float | None = None
    expected_interval: tuple[float, float] | None = None
    gain_vs_yesterday: float | None = None  # expected conversions over keeping yesterday's split
    gain_vs_inverse_cpa: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def spends(self) -> dict[str, float]:
        return {r.channel: r.spend for r in self.rows}
