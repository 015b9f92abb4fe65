"""Teacher training with Stable-Baselines3 PPO (Schulman et al. 2017, arXiv 1707.06347), resumable.

The teacher is an SB3 ``MultiInputPolicy`` whose features extractor (shared by actor and critic) is
:class:`digr.policies.teacher.GridExtractor` (``arch: grid``) or SB3's ``CombinedExtractor`` with its Nature-DQN
``NatureCNN`` (``arch: nature``, Atari, as RL-Zoo). It writes a :class:`digr.policies.teacher.TeacherFolder`:
weights, spec and SB3 zip at the end; ``checkpoint/`` (policy weights, optimiser state, step count) every
``checkpoint_every`` environment steps, from which an interrupted run resumes; and ``curve.csv``, the learning curve
(steps, mean return and success rate of the episodes finished in each rollout; ``mean_score``: the true game score of
games finished in the rollout, from ``info["game_score"]`` of the env contract, :data:`digr.contracts.INFO_KEYS` —
Atari training envs end episodes at a lost life and clip rewards, so their episode return is not the score).

Training can stop early at a wall-clock budget (``max_minutes``): it checkpoints and a later call resumes.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from digr.checkpoint import load_module, load_training_state, save_module, save_training_state, write_text_atomic
from digr.policies.nets import DEFAULT_GRID_CHANNELS
from digr.policies.teacher import sb3_policy_kwargs, teacher_spaces
from digr.policies.teacher_folder import TeacherFolder

__all__ = ["train_teacher"]


def _schedule(kind: str, value: float):
    """SB3 schedule: constant, or linear from ``value`` to 0 over training (SB3's progress_remaining goes 1 → 0)."""
    return value if kind == "constant" else (lambda progress_remaining: progress_remaining * value)


class _CurveCallback(BaseCallback):
    """Records the learning curve and saves a resumable checkpoint every ``checkpoint_every`` steps."""

    def __init__(
        self,
        curve_path: Path,
        save: Callable[[], None],
        checkpoint_every: int,
        total: int,
        report: Callable[[dict], None] | None,
        max_seconds: float | None = None,
    ):
        super().__init__()
        self.curve_path, self.save, self.every, self.total, self.report = curve_path, save, checkpoint_every, total, report
        self.max_seconds = max_seconds
        self.stopped_early = False
        self.last_ckpt = 0
        self.t0 = time.perf_counter()
        self.steps0 = None
        self.returns: list[float] = []
        self.successes: list[float] = []
        self.scores: list[float] = []

    def _on_step(self) -> bool:
        if self.steps0 is None:
            self.steps0 = self.num_timesteps
        for info in self.locals.get("infos", []):
            ep = info.get("episode")
            if ep is not None:
                self.returns.append(float(ep["r"]))
                self.successes.append(float(info["is_success"]) if "is_success" in info else float("nan"))
            if info.get("game_score") is not None:
                self.scores.append(float(info["game_score"]["r"]))
        if self.max_seconds is not None and time.perf_counter() - self.t0 > self.max_seconds:
            self.stopped_early = True
            return False
        return True

    def _on_rollout_end(self) -> None:
        if self.returns:
            row = {
                "steps": self.num_timesteps,
                "episodes": len(self.returns),
                "mean_return": float(np.mean(self.returns)),
                "success_rate": float(np.mean(self.successes)),
                "steps_per_sec": (self.num_timesteps - self.steps0) / max(1e-9, time.perf_counter() - self.t0),
                "mean_score": float(np.mean(self.scores)) if self.scores else float("nan"),
            }
            new = not self.curve_path.exists()
            with self.curve_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            if self.report:
                self.report(row)
            self.returns, self.successes, self.scores = [], [], []
        if self.num_timesteps - self.last_ckpt >= self.every:
            self.save()
            self.last_ckpt = self.num_timesteps


def train_teacher(
    env_fn: Callable[[], gym.Env],
    cfg,
    out: TeacherFolder,
    seed: int = 0,
    device: str = "cpu",
    report: Callable[[dict], None] | None = None,
    max_minutes: float | None = None,
) -> Path | None:
    """Train (or resume training) a PPO teacher until ``cfg.total_timesteps`` environment steps.

    :param env_fn: makes one contract env (called ``cfg.n_envs`` times for training, each wrapped in SB3's ``Monitor``,
        and once more to read the spaces for ``teacher.json``).
    :param cfg: the teacher config section (:class:`digr.running.config.TeacherConfig`: PPO hyperparameters,
        architecture, ``checkpoint_every`` in env steps).
    :param out: the teacher folder to write (weights, spec, SB3 zip, curve, checkpoint).
    :param report: called with each learning-curve row (progress display).
    :param max_minutes: wall-clock budget of this call; when it runs out, training checkpoints and returns None
        (call again to resume).
    :returns: path of ``teacher.safetensors``, or None if stopped by ``max_minutes`` before ``total_timesteps``.
    :raises CheckpointError: a corrupt resume checkpoint (delete ``teacher/checkpoint`` to restart).
    """
    out.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    venv = make_vec_env(env_fn, n_envs=cfg.n_envs, seed=seed)
    model = PPO(
        "MultiInputPolicy",
        venv,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=_schedule(cfg.lr_schedule, cfg.learning_rate),
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=_schedule(cfg.clip_schedule, cfg.clip_range),
        max_grad_norm=cfg.max_grad_norm,
        policy_kwargs=sb3_policy_kwargs(cfg.arch, cfg.cell, cfg.features_dim, cfg.channels),
        seed=seed,
        device=device,
        verbose=0,
    )
    done_steps, wall0, t_call = 0, 0.0, time.perf_counter()
    if out.checkpoint_state.is_file():
        state = load_training_state(out.checkpoint_state)
        load_module(model.policy, out.checkpoint_policy)
        model.policy.optimizer.load_state_dict(state["optim"])
        done_steps = int(state["num_timesteps"])
        wall0 = float(state.get("wall_s", 0.0))
        model.num_timesteps = done_steps
    policy_spec = {"cell": cfg.cell, "features_dim": cfg.features_dim, "arch": cfg.arch}
    if tuple(cfg.channels) != DEFAULT_GRID_CHANNELS:  # written only when not the default, so older DIGR versions read the spec
        policy_spec["channels"] = list(cfg.channels)
    spec = {"spaces": None, "policy_kwargs": policy_spec, "algo": "sb3-ppo"}
    env0 = env_fn()
    spec["spaces"] = teacher_spaces(env0)
    env0.close()

    def save():
        save_module(model.policy, out.checkpoint_policy)
        save_training_state(
            {
                "optim": model.policy.optimizer.state_dict(),
                "num_timesteps": model.num_timesteps,
                "wall_s": wall0 + time.perf_counter() - t_call,
            },
            out.checkpoint_state,
        )

    remaining = cfg.total_timesteps - done_steps
    if remaining > 0:
        cb = _CurveCallback(
            out.curve,
            save,
            cfg.checkpoint_every,
            cfg.total_timesteps,
            report,
            None if max_minutes is None else 60.0 * max_minutes,
        )
        cb.last_ckpt = done_steps
        # resuming with reset_num_timesteps=False, SB3 measures schedule progress as num_timesteps / total_timesteps,
        # so a linear schedule continues where it stopped
        model.learn(total_timesteps=remaining, callback=cb, reset_num_timesteps=done_steps == 0)
        save()
        if cb.stopped_early:
            venv.close()
            return None
    venv.close()
    model.save(out.sb3_zip)
    save_module(model.policy, out.weights)
    spec["num_timesteps"] = int(model.num_timesteps)
    spec["train_wall_s"] = round(wall0 + time.perf_counter() - t_call, 1)  # summed over resumed calls
    write_text_atomic(out.spec, json.dumps(spec, indent=2))
    return out.weights
