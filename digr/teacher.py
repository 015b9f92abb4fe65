"""Teacher training with Stable-Baselines3 PPO (Schulman et al. 2017, arXiv 1707.06347), resumable.

The teacher is an SB3 ``MultiInputPolicy`` whose features extractor (shared by actor and critic) is
:class:`digr.nets.GridCNN` (``arch: grid``) or SB3's ``CombinedExtractor`` with its Nature-DQN ``NatureCNN``
(``arch: nature``, Atari, as RL-Zoo). Artefacts in the run folder's ``teacher/`` directory:

* ``teacher.zip`` — the standard SB3 zip (for SB3 tools: ``PPO.load``, rl-zoo ``enjoy``);
* ``teacher.safetensors`` + ``teacher.json`` — weights and the architecture/observation spec (with ``num_timesteps``
  and ``train_wall_s``, the training wall time summed over resumed calls); DIGR reloads the teacher from these (no
  unpickling);
* ``provenance.json`` — written by the pipeline: the command, seed, env and teacher config the teacher was trained with;
* ``checkpoint/`` — policy weights, optimizer state and step count every ``checkpoint_every`` steps; an interrupted
  run resumes from here;
* ``curve.csv`` — the learning curve (steps, mean return and success rate of the episodes finished in each rollout;
  ``mean_score``: the true game score of games finished in the rollout, for envs that report ``info["game_score"]``
  — Atari training envs end episodes at a lost life and clip rewards, so their episode return is not the score).

Training can stop early at a wall-clock budget (``max_minutes``): it checkpoints and a later call resumes.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticCnnPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor

from digr.checkpoint import CheckpointError, load_module, load_training_state, save_module, save_training_state, write_text_atomic
from digr.config import ConfigError, TeacherConfig
from digr.nets import DEFAULT_GRID_CHANNELS, GridCNN
from digr.policies import SB3Teacher

__all__ = ["GridExtractor", "train_teacher", "load_teacher", "teacher_spaces", "build_cnn_policy", "copy_pretrained_teacher"]


class GridExtractor(BaseFeaturesExtractor):
    """SB3 features extractor around :class:`GridCNN` for contract observations (SB3 has already scaled ``image`` to [0, 1])."""

    def __init__(self, observation_space: spaces.Dict, cell: int = 8, features_dim: int = 256, channels: tuple[int, ...] = DEFAULT_GRID_CHANNELS):
        super().__init__(observation_space, features_dim)
        side = observation_space.spaces.get("side")
        self.net = GridCNN(observation_space["image"].shape, side.shape[0] if side is not None else 0, cell, features_dim, tuple(channels))

    def forward(self, obs: dict) -> th.Tensor:
        return self.net(obs["image"], obs.get("side"))


def _policy_kwargs(cfg: TeacherConfig) -> dict:
    if cfg.arch == "nature":
        return {"features_extractor_class": CombinedExtractor, "features_extractor_kwargs": {"cnn_output_dim": cfg.features_dim},
                "share_features_extractor": True, "normalize_images": True}
    return {"features_extractor_class": GridExtractor,
            "features_extractor_kwargs": {"cell": cfg.cell, "features_dim": cfg.features_dim, "channels": tuple(cfg.channels)},
            "share_features_extractor": True, "normalize_images": True}


def _schedule(kind: str, value: float):
    """SB3 schedule: constant, or linear from ``value`` to 0 over training (SB3's progress_remaining goes 1 → 0)."""
    return value if kind == "constant" else (lambda progress_remaining: progress_remaining * value)


def teacher_spaces(env: gym.Env) -> dict:
    """JSON-safe description of an env's observation and action spaces (stored in ``teacher.json``)."""
    obs = {"image": list(env.observation_space["image"].shape)}
    if "side" in env.observation_space.spaces:
        obs["side"] = list(env.observation_space["side"].shape)
    return {"observation": obs, "n_actions": int(env.action_space.n)}


def _spaces_from(spec: dict) -> tuple[spaces.Dict, spaces.Discrete]:
    obs = {"image": spaces.Box(0, 255, tuple(spec["observation"]["image"]), np.uint8)}
    if "side" in spec["observation"]:
        obs["side"] = spaces.Box(-np.inf, np.inf, tuple(spec["observation"]["side"]), np.float32)
    return spaces.Dict(obs), spaces.Discrete(spec["n_actions"])


class _CurveCallback(BaseCallback):
    """Records the learning curve and saves a resumable checkpoint every ``checkpoint_every`` steps."""

    def __init__(self, curve_path: Path, save: Callable[[], None], checkpoint_every: int, total: int, report: Callable[[dict], None] | None,
                 max_seconds: float | None = None):
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
            row = {"steps": self.num_timesteps, "episodes": len(self.returns), "mean_return": float(np.mean(self.returns)),
                   "success_rate": float(np.mean(self.successes)),
                   "steps_per_sec": (self.num_timesteps - self.steps0) / max(1e-9, time.perf_counter() - self.t0),
                   "mean_score": float(np.mean(self.scores)) if self.scores else float("nan")}
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


def train_teacher(env_fn: Callable[[], gym.Env], cfg: TeacherConfig, out_dir: str | Path, seed: int = 0, device: str = "cpu",
                  report: Callable[[dict], None] | None = None, max_minutes: float | None = None) -> Path | None:
    """Train (or resume training) a PPO teacher until ``cfg.total_timesteps`` environment steps.

    :param env_fn: makes one contract env (called ``cfg.n_envs`` times; each is wrapped in SB3's ``Monitor``).
    :param report: called with each learning-curve row (progress display).
    :param max_minutes: wall-clock budget of this call; when it runs out, training checkpoints and returns None
        (call again to resume).
    :returns: path of ``teacher.safetensors``, or None if stopped by ``max_minutes`` before ``total_timesteps``.
    :raises CheckpointError: a corrupt resume checkpoint (delete ``teacher/checkpoint`` to restart).
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    venv = make_vec_env(env_fn, n_envs=cfg.n_envs, seed=seed)
    model = PPO("MultiInputPolicy", venv, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                learning_rate=_schedule(cfg.lr_schedule, cfg.learning_rate), ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, gamma=cfg.gamma,
                gae_lambda=cfg.gae_lambda, clip_range=_schedule(cfg.clip_schedule, cfg.clip_range), max_grad_norm=cfg.max_grad_norm,
                policy_kwargs=_policy_kwargs(cfg), seed=seed, device=device, verbose=0)
    done_steps, wall0, t_call = 0, 0.0, time.perf_counter()
    if (ckpt_dir / "state.pt").is_file():
        state = load_training_state(ckpt_dir / "state.pt")
        load_module(model.policy, ckpt_dir / "policy.safetensors")
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
        save_module(model.policy, ckpt_dir / "policy.safetensors")
        save_training_state({"optim": model.policy.optimizer.state_dict(), "num_timesteps": model.num_timesteps,
                             "wall_s": wall0 + time.perf_counter() - t_call}, ckpt_dir / "state.pt")

    remaining = cfg.total_timesteps - done_steps
    if remaining > 0:
        cb = _CurveCallback(out / "curve.csv", save, cfg.checkpoint_every, cfg.total_timesteps, report,
                            None if max_minutes is None else 60.0 * max_minutes)
        cb.last_ckpt = done_steps
        # resuming with reset_num_timesteps=False, SB3 measures schedule progress as num_timesteps / total_timesteps,
        # so a linear schedule continues where it stopped
        model.learn(total_timesteps=remaining, callback=cb, reset_num_timesteps=done_steps == 0)
        save()
        if cb.stopped_early:
            venv.close()
            return None
    venv.close()
    model.save(out / "teacher.zip")
    save_module(model.policy, out / "teacher.safetensors")
    spec["num_timesteps"] = int(model.num_timesteps)
    spec["train_wall_s"] = round(wall0 + time.perf_counter() - t_call, 1)  # summed over resumed calls
    write_text_atomic(out / "teacher.json", json.dumps(spec, indent=2))
    return out / "teacher.safetensors"


def copy_pretrained_teacher(src_dir: str | Path, out_dir: str | Path, env_spaces: dict, cfg: TeacherConfig) -> Path:
    """Copy a saved DIGR teacher (``teacher.safetensors`` + ``teacher.json`` [+ ``curve.csv``, ``provenance.json``])
    into a run's ``teacher/``.

    The teacher is loaded once (:func:`load_teacher`) to check that it is intact, fits the env and has the architecture
    the config describes (students are built from ``cfg``) before anything is copied. Files are copied atomically, one by
    one, ``teacher.safetensors`` last; optional files the source lacks are removed from ``out_dir`` so that nothing of an
    earlier teacher is left beside the new one.

    :param src_dir: folder written by ``digr teacher`` (a run's ``teacher/``), e.g. ``experiments/teachers/breakout``.
    :param out_dir: the run's ``teacher/`` folder (created).
    :param env_spaces: the env's :func:`teacher_spaces` (image shape, side length, number of actions).
    :param cfg: the run's teacher config.
    :returns: path of the copied ``teacher.safetensors``.
    :raises CheckpointError: missing or corrupt files, or a teacher made for other observations or action counts.
    :raises ConfigError: ``cfg.arch``, ``cell``, ``features_dim`` or ``channels`` differ from the saved teacher's.
    """
    src, out = Path(src_dir), Path(out_dir)
    if not (src / "teacher.safetensors").is_file():
        raise CheckpointError(f"teacher.pretrained: {src / 'teacher.safetensors'} not found; point it at a folder written by `digr teacher`")
    load_teacher(src / "teacher.safetensors")
    spec = json.loads((src / "teacher.json").read_text())
    if spec["spaces"] != env_spaces:
        raise CheckpointError(f"teacher.pretrained: {src} was trained on {spec['spaces']}, but the env gives {env_spaces}; "
                              "use the env it was trained on (see its provenance.json)")
    fields = ("arch", "cell", "features_dim", "channels")
    if spec.get("policy") == "cnn":  # imported SB3 CnnPolicy: the Nature-DQN CNN
        saved = {**vars(TeacherConfig()), "arch": "nature", "features_dim": spec["policy_kwargs"]["features_dim"]}
    else:  # the same reading of the spec as load_teacher (absent fields are TeacherConfig defaults)
        saved = vars(TeacherConfig(**spec["policy_kwargs"]))
    saved = {k: list(saved[k]) if k == "channels" else saved[k] for k in fields}
    wanted = {k: list(getattr(cfg, k)) if k == "channels" else getattr(cfg, k) for k in fields}
    relevant = ("arch", "features_dim") if cfg.arch == "nature" else tuple(wanted)
    diff = {f"teacher.{k}": (wanted[k], saved[k]) for k in relevant if wanted[k] != saved[k]}
    if diff:
        raise ConfigError(f"teacher.pretrained: {src} has a different architecture; set "
                          + ", ".join(f"{k}: {v[1]} (config has {v[0]})" for k, v in diff.items()))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("curve.csv", "provenance.json", "teacher.zip", "teacher.json", "teacher.safetensors"):
        if (src / name).is_file():
            tmp = out / (name + ".tmp")
            shutil.copyfile(src / name, tmp)
            tmp.replace(out / name)
        elif name != "teacher.safetensors":
            (out / name).unlink(missing_ok=True)
    return out / "teacher.safetensors"


def build_cnn_policy(spec: dict) -> ActorCriticCnnPolicy:
    """SB3 ``ActorCriticCnnPolicy`` (NatureCNN + heads) on a Box uint8 image, from a ``teacher.json`` spec of
    :func:`digr.sb3_zip.read_sb3_zip` (untrained weights; load them with :func:`digr.checkpoint.load_module`).

    :raises KeyError, TypeError: a spec without the fields ``read_sb3_zip`` writes.
    """
    kw = spec["policy_kwargs"]
    obs_space = spaces.Box(0, 255, tuple(spec["spaces"]["observation"]["image"]), np.uint8)
    return ActorCriticCnnPolicy(obs_space, spaces.Discrete(spec["spaces"]["n_actions"]), lr_schedule=lambda _: 0.0,
                                net_arch=dict(kw["net_arch"]), features_extractor_kwargs={"features_dim": kw["features_dim"]},
                                share_features_extractor=kw["share_features_extractor"], normalize_images=kw["normalize_images"],
                                activation_fn=getattr(th.nn, kw.get("activation_fn", "Tanh")))


def load_teacher(path: str | Path, device: str = "cpu") -> SB3Teacher:
    """Rebuild a teacher from ``teacher.safetensors`` + ``teacher.json`` (written by :func:`train_teacher`), no unpickling.

    Also loads teachers imported from a user's SB3 CnnPolicy zip (``"policy": "cnn"`` in the spec, see
    :mod:`digr.sb3_zip`).

    :raises CheckpointError: missing/corrupt files or weights that do not fit the spec.
    """
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise CheckpointError(f"teacher spec {spec_path} missing; re-run `digr teacher`")
    try:
        spec = json.loads(spec_path.read_text())
        obs_space, act_space = _spaces_from(spec["spaces"])
        if spec.get("policy") == "cnn":  # imported SB3 CnnPolicy zip (digr.sb3_zip)
            policy = build_cnn_policy(spec)
        else:
            policy = MultiInputActorCriticPolicy(obs_space, act_space, lr_schedule=lambda _: 0.0,
                                                 **_policy_kwargs(TeacherConfig(**spec["policy_kwargs"])))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"teacher spec {spec_path} is corrupt or describes no buildable policy ({e}); re-run `digr teacher`") from e
    load_module(policy, path)
    return SB3Teacher(policy.to(device)).eval()
