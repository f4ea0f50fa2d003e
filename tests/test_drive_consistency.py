"""The selection's plan-consistency term (`SelectionWeights.consistency`, for NAVSIM v2's EC): an entry that
continues the previous plan's motion costs nothing, one that brakes or turns instead costs by the EC limits."""

import math

import numpy as np
import pytest
import torch

from trajmoe.drive.config import SelectionWeights
from trajmoe.drive.model import consistency_cost, select_plan


def _plan(speeds, yaw_rate=0.0):
    """8 poses at 0.5 s driving the given segment speeds (m/s) at a constant yaw rate (rad/s)."""
    x = y = h = 0.0
    out = []
    for v in speeds:
        h += yaw_rate * 0.5
        x, y = x + v * 0.5 * math.cos(h), y + v * 0.5 * math.sin(h)
        out.append((x, y, h))
    return torch.tensor(out, dtype=torch.float64)


def test_continuing_the_previous_plan_costs_nothing_and_braking_costs_by_the_ec_limit():
    prev = _plan([10.0] * 8)[None]
    vocab = torch.stack([_plan([10.0] * 8), _plan([10.0 - 1.0 * k for k in range(8)]), _plan([10.0] * 8, 0.1)])
    c = consistency_cost(vocab, prev)
    assert c.shape == (1, 3)
    assert c[0, 0] == pytest.approx(0.0, abs=1e-9)
    # braking 2 m/s^2 (1 m/s per 0.5 s) where the previous plan kept its speed: RMS 2 / 0.7
    assert c[0, 1] == pytest.approx(2.0 / 0.7, rel=1e-6)
    assert c[0, 2] == pytest.approx(0.1 / 0.1, rel=1e-6)  # turning at 0.1 rad/s: one EC yaw-rate limit
    nan = torch.full((1, 8, 3), float("nan"), dtype=torch.float64)
    assert torch.equal(consistency_cost(vocab, nan), torch.zeros(1, 3, dtype=torch.float64))


def test_selection_prefers_the_consistent_entry_only_when_asked():
    vocab40 = torch.zeros(2, 40, 3, dtype=torch.float32)
    vocab40[:, 4::5] = torch.stack([_plan([10.0 - k for k in range(8)]), _plan([10.0] * 8)]).float()
    probs = torch.ones(1, 2, 8) * 0.9
    imi = torch.log(torch.tensor([[0.6, 0.4]]))  # the imitation head prefers braking (entry 0)
    pred = {"probs": probs, "imi_logp": imi}
    prev = _plan([10.0] * 8)[None].float()
    assert int(select_plan(pred, vocab40, SelectionWeights(), prev)["index"][0]) == 0  # GTRS: no term
    assert int(select_plan(pred, vocab40, SelectionWeights(consistency=1.0), prev)["index"][0]) == 1
    assert int(select_plan(pred, vocab40, SelectionWeights(consistency=1.0))["index"][0]) == 0  # no previous plan
