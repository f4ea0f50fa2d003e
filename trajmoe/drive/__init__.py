"""TrajMoE driving planner on highway-env scenes, in NAVSIM's conventions.

scenes.py (highway-env -> ego-frame scenes, 4 domains) -> metrics.py (vectorised NAVSIM-v2 EPDMS
scorer; tracker.py: LQR tracking on a kinematic bicycle, comfort.py: HC / EC), baselines.py
(constant velocity, keep lane, PDM-Closed analogue) ->
vocab.py (k-means vocabulary + per-scene targets) -> model.py (GTRS scorer with sparse-MoE decoder)
-> run.py (training via trajmoe.train.Trainer), grpo.py (TrajMoE paper eqs. 5-10), ensemble.py,
evaluate.py (open loop), closed_loop.py (planner drives highway-env), plots.py.
CLI: `trajmoe data scenes`, `trajmoe train|finetune|ensemble|eval planner` (old spelling
`trajmoe drive data|train|...` kept as an alias), `trajmoe bench drive-scorer`.
"""
