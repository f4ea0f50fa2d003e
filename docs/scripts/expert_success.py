"""Scripted-expert success on the held-out evaluation variations (no rendering: physics only).

    python docs/scripts/expert_success.py EPISODES TASK [TASK ...]

Episode i of a task runs on variation EVAL_VARIATION_START + i with the task's closed-loop episode
limit (trajmoe.envs.metaworld.TASK_EPISODE_LIMITS), as `trajmoe eval policy` does. Prints one JSON
line per task: successes, episodes, Wilson 95 % interval, mean steps to success.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np

from trajmoe.envs.metaworld import EVAL_VARIATION_START, make_env
from trajmoe.eval.stats import success_summary


def main() -> None:
    n = int(sys.argv[1])
    for task in sys.argv[2:]:
        env = make_env(task, EVAL_VARIATION_START)
        wins, lengths = 0, []
        for i in range(n):
            env.reset(variation=EVAL_VARIATION_START + i)
            state = env._state
            for t in range(env.episode_limit):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a = np.clip(np.asarray(env.expert.get_action(state), np.float32), -1, 1)
                    state, _, _, _, info = env.env.step(a)
                if info.get("success"):
                    wins += 1
                    lengths.append(t + 1)
                    break
        env.close()
        out = dict(success_summary(wins, n), task=task, limit=env.episode_limit,
                   mean_steps=float(np.mean(lengths)) if lengths else None)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
