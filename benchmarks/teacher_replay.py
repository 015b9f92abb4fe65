"""How long a resumed teacher spends replaying its checkpoint's env actions (digr/policies/ppo.py, "Exact resume").

The replay steps the training vector env only (no network), built as `digr teacher` builds it, through random actions.
Run alone on the machine (another torch or env job beside it distorts the timing):

    python benchmarks/teacher_replay.py experiments/minigrid_fetch.yaml --steps 100000
    python benchmarks/teacher_replay.py experiments/breakout.yaml --steps 20000

Prints seconds per 100k env steps; a teacher resumed at step S replays S steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3.common.env_util import make_vec_env

from digr.rollout import replay_actions
from digr.running.config import load_config


def main() -> None:
    """Time :func:`digr.rollout.replay_actions` on the config's training env with ``teacher.n_envs`` envs."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--steps", type=int, default=100_000, help="env steps to replay (all envs together)")
    args = p.parse_args()
    cfg = load_config(args.config)
    n = cfg.teacher.n_envs
    venv = make_vec_env(cfg.env.make_fn(), n_envs=n, seed=cfg.seed)
    venv.reset()
    actions = np.random.default_rng(0).integers(0, venv.action_space.n, size=(args.steps // n, n))
    t0 = time.perf_counter()
    replay_actions(venv, actions)
    seconds = time.perf_counter() - t0
    venv.close()
    rate = f"{seconds / actions.size * 1e5:.1f} s per 100k steps"
    print(f"{cfg.env.id}: {n} envs, {actions.size} steps replayed in {seconds:.1f} s = {rate}")


if __name__ == "__main__":
    main()
