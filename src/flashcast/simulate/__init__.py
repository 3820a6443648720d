"""A GA4 export simulator that knows the truth: see `flashcast.simulate.generator`."""

from flashcast.simulate.generator import SimulationResult, SimulationSpec, simulate, simulate_into, simulate_once
from flashcast.simulate.response import ChannelTruth, adstock, saturation

__all__ = ["ChannelTruth", "SimulationResult", "SimulationSpec", "adstock", "saturation", "simulate", "simulate_into",
           "simulate_once"]
