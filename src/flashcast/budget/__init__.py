"""Budget allocation, a library that imports no stage.

    records      ChannelHistory, ChannelBounds, AllocationRow, Allocation
    bounds       the day's budget, guardrail bounds per channel, the feasibility check, cent rounding
    inverse_cpa  weights by recent conversions per unit of spend, projected onto the bounds exactly
    curves       response curves (adstock + Hill/exponential, one kernel), fitting, bootstrap
    optimizer    the exact optimizer (equal marginal returns) over lines and channels
    plan         curve allocation: fit, optimize, explain each channel, sweep budgets (what-if)
    charts       response curves and the what-if sweep as PNGs
"""
