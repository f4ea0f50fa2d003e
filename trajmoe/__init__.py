"""trajmoe: sparse Mixture-of-Experts trajectory models.

Two applications on one shared core:
  * Tra-MoE (seed 000): any-point track prediction + trajectory-guided policy (MetaWorld).
  * TrajMoE (seed 001): vocabulary-scoring driving planner (highway-env, NAVSIM-style EPDMS).
Shared core: `trajmoe.moe` (sparse MoE layer), `trajmoe.nn` (transformer blocks),
`trajmoe.train` (the one Trainer).
"""

__version__ = "0.1.0"
