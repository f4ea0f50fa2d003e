"""trajmoe: sparse Mixture-of-Experts trajectory models.

Two applications on one shared core:
  * Tra-MoE (Tra-MoE paper): any-point track prediction + trajectory-guided policy (MetaWorld).
  * TrajMoE (TrajMoE paper): vocabulary-scoring driving planner (highway-env, NAVSIM-style EPDMS).
Shared core: `trajmoe.moe` (sparse MoE layer), `trajmoe.nn` (transformer blocks),
`trajmoe.train` (the one Trainer).
"""

__version__ = "0.1.0"
