"""Confidence intervals: of a mean over scenes or episodes (normal), of a success rate (Wilson).

Wilson score interval (E. B. Wilson, "Probable inference, the law of succession, and statistical
inference", JASA 1927; Brown, Cai & DasGupta, Statistical Science 2001, eq. 4): for k successes in
n independent episodes, p = k / n and z the normal quantile (1.96 for 95 %),

    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

It stays inside [0, 1] and is not degenerate at k = 0 or k = n (unlike p +- z sqrt(p(1-p)/n)).
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # standard normal 97.5 % quantile


def mean_ci95(x) -> float:
    """Half-width of the normal 95 % interval of the mean of `x` (1.96 standard errors); nan below 2 values."""
    x = np.asarray(x, np.float64)
    return float(1.96 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) Wilson score interval of a success rate, in [0, 1]; see the module doc.

    Args:
        successes: k, an int in 0..n; n: episodes, an int >= 1; z: normal quantile (> 0).

    Raises:
        ValueError: n, successes or z out of range (the message names the value).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {n!r}")
    if not isinstance(successes, int) or not 0 <= successes <= n:
        raise ValueError(f"successes must be an integer in 0..{n}, got {successes!r}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z!r}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def success_summary(successes: int, n: int) -> dict:
    """{"success_rate", "successes", "episodes", "ci95": [low, high]} (Wilson 95 %)."""
    lo, hi = wilson_interval(successes, n)
    return {"success_rate": successes / n, "successes": successes, "episodes": n, "ci95": [lo, hi]}
