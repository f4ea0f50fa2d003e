"""Shared sparse Mixture-of-Experts core (router, stacked experts, dispatch, aux losses, stats)."""

from .config import MoEConfig
from .experts import FeedForward, StackedExperts
from .layer import MoE
from .losses import add_moe_aux, cv2_balance_loss, cv_squared, load_balance_loss, router_z_loss
from .router import Router
from .stats import RoutingStats, busiest_share_by_domain, expert_shares, reset_routing

__all__ = [
    "MoE",
    "MoEConfig",
    "Router",
    "FeedForward",
    "StackedExperts",
    "RoutingStats",
    "busiest_share_by_domain",
    "expert_shares",
    "reset_routing",
    "add_moe_aux",
    "load_balance_loss",
    "router_z_loss",
    "cv2_balance_loss",
    "cv_squared",
]
