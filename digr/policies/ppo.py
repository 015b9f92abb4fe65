"""Teacher training with Stable-Baselines3 PPO (Schulman et al. 2017, arXiv 1707.06347), resumable.

The teacher is an SB3 ``MultiInputPolicy`` whose features extractor (shared by actor and critic) is
:class:`digr.policies.teacher.GridExtractor` (``arch: grid``) or SB3's ``CombinedExtractor`` with its Nature-DQN
``NatureCNN`` (``arch: nature``, Atari, as RL-Zoo). It writes a :class:`digr.policies.teacher.TeacherFolder`:
weights, spec and SB3 zip at the end; ``checkpoint/state.pt`` every ``checkpoint_every`` environment steps, from
which an interrupted run resumes; and ``curve.csv``, the learning curve
(steps, mean return and success rate of the episodes finished in each rollout; ``mean_score``: the true game score of
games finished in the rollout, from ``info["game_score"]`` of the env contract, :data:`digr.contracts.INFO_KEYS` —
Atari training envs end episodes at a lost life and clip rewards, so their episode return is not the score).

Exact resume. A checkpoint is taken after the PPO update of a rollout (at the start of the next rollout) and is one
file: policy weights, optimiser state, step count, the torch / numpy / Python RNG states, the config the teacher
depends on, and every action sent to the vector env since training began. Resuming rebuilds the vector env exactly
as training did (same seeds) and replays those actions, which restores every env's state, its wrappers' state and its
own RNG without pickling an env; the observations after the replay are checked against a hash stored in the
checkpoint. A resumed teacher is therefore bit-identical to an uninterrupted one (for envs that are deterministic
given their seed and actions, as MiniGrid and ALE are; a mismatch is reported, not ignored). The replay steps the env
only (no network): 26 s per 100k MiniGrid steps, 114 s per 100k Breakout steps on 2 cores
(``benchmarks/teacher_replay.py``). ``curve.csv`` is cut back to the checkpoint's step.

Training can stop early at a wall-clock budget (``max_minutes``): it checkpoints after the current rollout's update
and a later call resumes. A non-finite policy weight stops training with :class:`digr.errors.NonFiniteError`; the
last good checkpoint is kept.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from digr.checkpoint import (
    atomic_path,
    load_training_state,
    save_module,
    save_training_state,
    write_text_atomic,
)
from digr.contracts import weights_finite
from digr.errors import CheckpointError, NonFiniteError
from digr.policies.teacher import sb3_policy_kwargs, teacher_spec
from digr.policies.teacher_folder import TeacherFolder
from digr.rollout import replay_actions

__all__ = ["CHECKPOINT_KEYS", "train_teacher"]

#: What a teacher checkpoint holds (a file without one of these is refused, not half-used).
CHECKPOINT_KEYS = ("policy", "optim", "num_timesteps", "wall_s", "rng", "actions", "obs_sha256", "config")


def _schedule(kind: str, value: float):
    """SB3 schedule: constant, or linear from ``value`` to 0 over training (SB3's progress_remaining goes 1 → 0)."""
    return value if kind == "constant" else (lambda progress_remaining: progress_remaining * value)


def _obs_sha256(obs) -> str:
    """SHA-256 of a vector env's observations (a dict of arrays or an array), to check a replay."""
    h = hashlib.sha256()
    for key, value in sorted(obs.items()) if isinstance(obs, dict) else [("", obs)]:
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def _rng_states(device: str) -> dict:
    """torch, numpy (global) and Python RNG states as tensors and numbers (loadable with ``weights_only``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch": th.get_rng_state(),
        "numpy": {"keys": th.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": int(version), "state": th.tensor(py_state, dtype=th.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }  # fmt: skip
    if str(device).startswith("cuda"):
        state["cuda"] = th.cuda.get_rng_state_all()
    return state


def _set_rng_states(state: dict) -> None:
    th.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state:
        th.cuda.set_rng_state_all(state["cuda"])


def _non_finite(out: TeacherFolder, step: int, last_ckpt: int) -> NonFiniteError:
    """The error for policy weights that became NaN or infinite by step ``step``."""
    kept = f"the last good checkpoint ({out.checkpoint_state}, step {last_ckpt}) is kept" if last_ckpt else "none was saved"
    return NonFiniteError(
        f"teacher: the PPO updates up to step {step} made the policy's weights non-finite (NaN or inf); training "
        f"stopped; {kept}. Lower teacher.learning_rate or teacher.max_grad_norm and use a new `name:`"
    )


class _Trainer(BaseCallback):
    """SB3 callback: records the actions sent to the env, the learning curve, checkpoints after updates, replays a
    checkpoint's actions when resuming, enforces the wall-clock budget and checks the weights are finite."""

    def __init__(self, out: TeacherFolder, cfg, config: dict, device: str, report, max_seconds, resume: dict | None,
                 wall0: float, on_replay: Callable[[int, int], None] | None):  # fmt: skip
        super().__init__()
        self.out, self.cfg, self.config, self.device, self.report = out, cfg, config, device, report
        self.max_seconds, self.resume, self.wall0, self.on_replay = max_seconds, resume, wall0, on_replay
        self.t0 = time.perf_counter()
        self.stopped_early = False
        self.steps0: int | None = None
        self.actions: list[np.ndarray] = []
        self.rows = _read_curve(out.curve, resume["num_timesteps"] if resume else 0)
        self.returns: list[float] = []
        self.successes: list[float] = []
        self.scores: list[float] = []
        self.last_ckpt = resume["num_timesteps"] if resume else 0

    def _on_training_start(self) -> None:
        self.steps0 = self.num_timesteps
        if self.resume is not None:
            self._replay(self.resume)
            self.resume = None

    def _replay(self, state: dict) -> None:
        """Bring the freshly reset vector env to the checkpoint's state by replaying its actions."""
        actions = state["actions"].numpy()
        obs, dones = replay_actions(self.model.env, actions, self.on_replay)
        if obs is None:
            obs, dones = self.model._last_obs, self.model._last_episode_starts
        if _obs_sha256(obs) != state["obs_sha256"]:
            raise CheckpointError(
                f"resuming from {self.out.checkpoint_state}: replaying the env's {len(actions)} recorded steps did not "
                "reproduce the observations saved with the checkpoint, so the env is not deterministic given its seed "
                "and actions and an exact resume is impossible; delete the checkpoint to restart the teacher"
            )
        self.model._last_obs, self.model._last_episode_starts = obs, dones
        self.actions = list(actions)
        _set_rng_states(state["rng"])

    def _on_step(self) -> bool:
        if self.stopped_early:
            return False
        self.actions.append(np.array(self.locals["clipped_actions"], copy=True))
        for info in self.locals.get("infos", []):
            ep = info.get("episode")
            if ep is not None:
                self.returns.append(float(ep["r"]))
                self.successes.append(float(info["is_success"]) if "is_success" in info else float("nan"))
            if info.get("game_score") is not None:
                self.scores.append(float(info["game_score"]["r"]))
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps == self.steps0:
            return  # no update since this call began
        if not weights_finite(self.model.policy):
            raise _non_finite(self.out, self.num_timesteps, self.last_ckpt)
        over = self.max_seconds is not None and time.perf_counter() - self.t0 > self.max_seconds
        if over or self.num_timesteps - self.last_ckpt >= self.cfg.checkpoint_every:
            self.save()
        self.stopped_early = over

    def _on_rollout_end(self) -> None:
        if not self.returns:
            return
        row = {
            "steps": self.num_timesteps,
            "episodes": len(self.returns),
            "mean_return": float(np.mean(self.returns)),
            "success_rate": float(np.mean(self.successes)),
            "steps_per_sec": (self.num_timesteps - self.steps0) / max(1e-9, time.perf_counter() - self.t0),
            "mean_score": float(np.mean(self.scores)) if self.scores else float("nan"),
        }
        self.rows.append(row)
        _write_curve(self.out.curve, self.rows)
        if self.report:
            self.report(row)
        self.returns, self.successes, self.scores = [], [], []

    def save(self) -> None:
        """Write the checkpoint (one file) of the state after the last update."""
        actions = np.stack(self.actions) if self.actions else np.zeros((0, self.model.env.num_envs), np.int64)
        if np.issubdtype(actions.dtype, np.integer) and actions.size and abs(actions).max() < 2**15:
            actions = actions.astype(np.int16)
        state = {
            "policy": self.model.policy.state_dict(),
            "optim": self.model.policy.optimizer.state_dict(),
            "num_timesteps": int(self.num_timesteps),
            "wall_s": self.wall0 + time.perf_counter() - self.t0,
            "rng": _rng_states(self.device),
            "actions": th.from_numpy(np.ascontiguousarray(actions)),
            "obs_sha256": _obs_sha256(self.model._last_obs),
            "config": json.dumps(self.config, sort_keys=True),
        }
        save_training_state(state, self.out.checkpoint_state)
        self.last_ckpt = self.num_timesteps


_CURVE_FIELDS = ("steps", "episodes", "mean_return", "success_rate", "steps_per_sec", "mean_score")


def _read_curve(path: Path, upto: int) -> list[dict]:
    """Rows of ``curve.csv`` up to step ``upto`` (a resumed run rewrites the rows after its checkpoint)."""
    if upto == 0 or not path.is_file():
        return []
    try:
        with path.open(newline="") as f:
            return [row for row in csv.DictReader(f) if int(float(row["steps"])) <= upto]
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as e:
        raise CheckpointError(
            f"learning curve {path} is unreadable ({type(e).__name__}: {e}); delete it (the resumed teacher then "
            "writes the rows from its checkpoint on) and rerun"
        ) from e


def _write_curve(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(_CURVE_FIELDS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def train_teacher(
    env_fn: Callable[[], gym.Env],
    cfg,
    out: TeacherFolder,
    seed: int = 0,
    device: str = "cpu",
    report: Callable[[dict], None] | None = None,
    max_minutes: float | None = None,
    config: dict | None = None,
    on_replay: Callable[[int, int], None] | None = None,
) -> Path | None:
    """Train (or resume training) a PPO teacher until ``cfg.total_timesteps`` environment steps.

    :param env_fn: makes one contract env (called ``cfg.n_envs`` times for training, each wrapped in SB3's ``Monitor``,
        and once more to read the spaces for ``teacher.json``).
    :param cfg: the teacher config section (:class:`digr.running.config.TeacherConfig`: PPO hyperparameters,
        architecture, ``checkpoint_every`` in env steps).
    :param out: the teacher folder to write (weights, spec, SB3 zip, curve, checkpoint).
    :param report: called with each learning-curve row (progress display).
    :param max_minutes: wall-clock budget of this call; when it runs out, training checkpoints after the current
        rollout's update and returns None (call again to resume).
    :param config: the config the teacher depends on, stored in every checkpoint (the caller refuses to resume from a
        checkpoint whose config differs: :func:`digr.checkpoint.checkpoint_config`).
    :param on_replay: called with ``(done, total)`` env steps while a resumed run replays its checkpoint's actions.
    :returns: path of ``teacher.safetensors``, or None if stopped by ``max_minutes`` before ``total_timesteps``.
    :raises CheckpointError: a corrupt resume checkpoint, or a replay that does not reproduce it (delete
        ``teacher/checkpoint`` to restart). :raises NonFiniteError: the weights became NaN or infinite.
    """
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
    resume, wall0, t_call = None, 0.0, time.perf_counter()
    if out.checkpoint_state.is_file():
        resume = load_training_state(out.checkpoint_state, CHECKPOINT_KEYS)
        try:
            model.policy.load_state_dict(resume["policy"])
            model.policy.optimizer.load_state_dict(resume["optim"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"teacher checkpoint {out.checkpoint_state} does not fit this teacher ({e}); delete it to restart"
            ) from e
        model.num_timesteps = int(resume["num_timesteps"])
        wall0 = float(resume["wall_s"])
    done_steps = model.num_timesteps
    spec = teacher_spec(cfg, env_fn, "sb3-ppo")

    remaining = cfg.total_timesteps - done_steps
    if remaining > 0:
        max_seconds = None if max_minutes is None else 60.0 * max_minutes
        cb = _Trainer(out, cfg, config or {}, device, report, max_seconds, resume, wall0, on_replay)
        # resuming with reset_num_timesteps=False, SB3 measures schedule progress as num_timesteps / total_timesteps,
        # so a linear schedule continues where it stopped
        try:
            model.learn(total_timesteps=remaining, callback=cb, reset_num_timesteps=done_steps == 0)
        except ValueError as e:  # torch's distributions refuse NaN logits before our check sees them
            if weights_finite(model.policy):
                raise
            raise _non_finite(out, model.num_timesteps, cb.last_ckpt) from e
        if cb.stopped_early:
            venv.close()
            return None
        if not weights_finite(model.policy):
            raise _non_finite(out, model.num_timesteps, cb.last_ckpt)
        cb.save()
        wall0 = wall0 + time.perf_counter() - t_call
    venv.close()
    with atomic_path(out.sb3_zip) as tmp:
        model.save(tmp)
    save_module(model.policy, out.weights)
    spec["num_timesteps"] = int(model.num_timesteps)
    spec["train_wall_s"] = round(wall0, 1)  # summed over resumed calls
    write_text_atomic(out.spec, json.dumps(spec, indent=2))
    return out.weights
