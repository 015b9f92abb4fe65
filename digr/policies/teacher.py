"""Teachers: an SB3 actor-critic policy behind the DIGR policy contract, and the files a teacher folder holds.

A teacher folder (:class:`digr.policies.teacher_folder.TeacherFolder`, the ``teacher/`` folder of a run or a
committed teacher under ``experiments/teachers/``) holds

* ``teacher.safetensors`` + ``teacher.json`` — weights and the architecture/observation spec (with ``num_timesteps``
  and ``train_wall_s``); DIGR reloads the teacher from these (:func:`load_teacher`, no unpickling);
* ``teacher.zip`` — the standard SB3 zip (for SB3 tools: ``PPO.load``, rl-zoo ``enjoy``), when DIGR trained it;
* ``provenance.json`` — the command, seed, env and teacher config the teacher was trained with;
* ``curve.csv`` — the learning curve (:mod:`digr.policies.ppo`), or ``imitation.json`` — the rounds of an imitation
  teacher (:mod:`digr.policies.imitation`); ``checkpoint/`` — the resumable training state;
* ``evaluation.json`` (committed teachers) — a recorded evaluation.

:class:`SB3Teacher` adapts an SB3 policy through public API only (``policy.get_distribution(obs).distribution.logits``
and ``policy.predict_values``). SB3 divides uint8 image observations by 255 inside the policy, so the adapter hands it
``255·image``: gradients then come out per [0, 1] pixel unit. Its output is ``log π(·|s)`` (torch's ``Categorical``
normalises the logits), so a perturbation map of an SB3 teacher scores ½‖Δ log π‖².
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor
from torch import nn

from digr.checkpoint import atomic_path, load_module
from digr.errors import CheckpointError, ConfigError
from digr.policies.nets import DEFAULT_GRID_CHANNELS, GridCNN
from digr.policies.sb3_zip import build_cnn_policy, import_sb3_zip
from digr.policies.teacher_folder import TeacherFolder

__all__ = [
    "ARCH_DEFAULTS",
    "GridExtractor",
    "SB3Teacher",
    "TeacherFolder",
    "build_cnn_policy",
    "copy_pretrained_teacher",
    "install_teacher",
    "load_teacher",
    "sb3_policy_kwargs",
    "spaces_from",
    "teacher_spaces",
    "teacher_spec",
]

#: Architecture fields of a teacher spec (``teacher.json`` ``policy_kwargs``) and their values where a spec omits them.
ARCH_DEFAULTS = {"arch": "grid", "cell": 8, "features_dim": 256, "channels": list(DEFAULT_GRID_CHANNELS)}


class SB3Teacher(nn.Module):
    """Wrap an SB3 ``ActorCriticPolicy`` (Dict obs with ``"image"`` uint8 and optional ``"side"``, or a Box image
    observation as SB3's ``CnnPolicy``) as a :class:`digr.contracts.Policy` with a critic.

    ``forward(image [B,C,H,W] float in [0,1], side [B,K] | None)`` returns log π(·|s), float ``[B, A]``;
    :meth:`value` returns the critic V(s), float ``[B]``. Both accept gradients w.r.t. ``image`` (units: per [0, 1]
    pixel value).

    :raises ValueError: (on call) a side input for a policy on a Box image, which takes the image only.
    """

    def __init__(self, sb3_policy):
        super().__init__()
        self.policy = sb3_policy
        self.policy.set_training_mode(False)

    def _obs(self, image: th.Tensor, side: th.Tensor | None) -> dict | th.Tensor:
        if not isinstance(self.policy.observation_space, spaces.Dict):  # SB3 CnnPolicy on a Box image (imported zip)
            if side is not None:
                raise ValueError("this teacher takes the image only (SB3 CnnPolicy on a Box observation); pass side=None")
            return image * 255.0
        obs = {"image": image * 255.0}
        if side is not None:
            obs["side"] = side
        return obs

    def forward(self, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
        return self.policy.get_distribution(self._obs(image, side)).distribution.logits

    def value(self, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
        """Critic V(s), float32 ``[B]``."""
        return self.policy.predict_values(self._obs(image, side)).squeeze(-1)


class GridExtractor(BaseFeaturesExtractor):
    """SB3 features extractor around :class:`digr.policies.nets.GridCNN` for contract observations (SB3 has already
    scaled ``image`` to [0, 1]). Output: float ``[B, features_dim]``."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        cell: int = 8,
        features_dim: int = 256,
        channels: tuple[int, ...] = DEFAULT_GRID_CHANNELS,
    ):
        super().__init__(observation_space, features_dim)
        side = observation_space.spaces.get("side")
        self.net = GridCNN(
            observation_space["image"].shape, side.shape[0] if side is not None else 0, cell, features_dim, tuple(channels)
        )

    def forward(self, obs: dict) -> th.Tensor:
        return self.net(obs["image"], obs.get("side"))


def sb3_policy_kwargs(arch: str = "grid", cell: int = 8, features_dim: int = 256, channels=DEFAULT_GRID_CHANNELS) -> dict:
    """SB3 ``policy_kwargs`` of a DIGR teacher: :class:`GridExtractor` (``arch="grid"``) or SB3's ``CombinedExtractor``
    with its Nature-DQN ``NatureCNN`` (``arch="nature"``, Atari, as RL-Zoo), shared by actor and critic."""
    if arch == "nature":
        return {
            "features_extractor_class": CombinedExtractor,
            "features_extractor_kwargs": {"cnn_output_dim": features_dim},
            "share_features_extractor": True,
            "normalize_images": True,
        }
    return {
        "features_extractor_class": GridExtractor,
        "features_extractor_kwargs": {"cell": cell, "features_dim": features_dim, "channels": tuple(channels)},
        "share_features_extractor": True,
        "normalize_images": True,
    }


def teacher_spec(cfg, env_fn, algo: str) -> dict:
    """The ``teacher.json`` of a teacher trained from the config section ``cfg`` (architecture fields) on the envs
    ``env_fn`` makes (one is made and closed to read its spaces): ``{"spaces", "policy_kwargs", "algo"}``.
    ``channels`` is written only when it differs from the default, so older DIGR versions read the spec."""
    policy_spec = {"cell": cfg.cell, "features_dim": cfg.features_dim, "arch": cfg.arch}
    if tuple(cfg.channels) != DEFAULT_GRID_CHANNELS:
        policy_spec["channels"] = list(cfg.channels)
    env = env_fn()
    try:
        return {"spaces": teacher_spaces(env), "policy_kwargs": policy_spec, "algo": algo}
    finally:
        env.close()


def teacher_spaces(env: gym.Env) -> dict:
    """JSON-safe description of an env's observation and action spaces (stored in ``teacher.json``):
    ``{"observation": {"image": [C, H, W][, "side": [K]]}, "n_actions": A}``."""
    obs = {"image": list(env.observation_space["image"].shape)}
    if "side" in env.observation_space.spaces:
        obs["side"] = list(env.observation_space["side"].shape)
    return {"observation": obs, "n_actions": int(env.action_space.n)}


def spaces_from(spec: dict) -> tuple[spaces.Dict, spaces.Discrete]:
    """The gymnasium spaces a :func:`teacher_spaces` description stands for (uint8 image Box, float32 side Box, Discrete)."""
    obs = {"image": spaces.Box(0, 255, tuple(spec["observation"]["image"]), np.uint8)}
    if "side" in spec["observation"]:
        obs["side"] = spaces.Box(-np.inf, np.inf, tuple(spec["observation"]["side"]), np.float32)
    return spaces.Dict(obs), spaces.Discrete(spec["n_actions"])


def load_teacher(path: str | Path, device: str = "cpu") -> SB3Teacher:
    """Rebuild a teacher from ``teacher.safetensors`` + ``teacher.json`` (written by :func:`digr.policies.ppo.train_teacher`
    or :func:`digr.policies.sb3_zip.import_sb3_zip`), no unpickling; eval mode.

    :param path: the weights file (:attr:`TeacherFolder.weights`); the spec is the ``.json`` beside it.
    :raises CheckpointError: missing/corrupt files or weights that do not fit the spec.
    """
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise CheckpointError(f"teacher spec {spec_path} missing; re-run `digr teacher`")
    try:
        spec = json.loads(spec_path.read_text())
        obs_space, act_space = spaces_from(spec["spaces"])
        if spec.get("policy") == "cnn":  # imported SB3 CnnPolicy zip (digr.policies.sb3_zip)
            policy = build_cnn_policy(spec)
        else:
            policy = MultiInputActorCriticPolicy(
                obs_space,
                act_space,
                lr_schedule=lambda _: 0.0,
                **sb3_policy_kwargs(**{**ARCH_DEFAULTS, **spec["policy_kwargs"]}),
            )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(
            f"teacher spec {spec_path} is corrupt or describes no buildable policy ({e}); re-run `digr teacher`"
        ) from e
    load_module(policy, path)
    return SB3Teacher(policy.to(device)).eval()


def copy_pretrained_teacher(src_dir: str | Path, out: TeacherFolder, env_spaces: dict, arch) -> Path:
    """Copy a saved DIGR teacher (``teacher.safetensors`` + ``teacher.json`` [+ ``curve.csv``, ``provenance.json``,
    ``evaluation.json``, ``teacher.zip``]) into a run's teacher folder.

    The teacher is loaded once (:func:`load_teacher`) to check that it is intact, fits the env and has the architecture
    the config describes (students are built from it) before anything is copied. Files are copied atomically, one by
    one, ``teacher.safetensors`` last; optional files the source lacks are removed from ``out`` so that nothing of an
    earlier teacher is left beside the new one.

    :param src_dir: folder written by ``digr teacher`` (a run's ``teacher/``), e.g. ``experiments/teachers/breakout``.
    :param out: the run's teacher folder (created).
    :param env_spaces: the env's :func:`teacher_spaces` (image shape, side length, number of actions).
    :param arch: the run's teacher config section (``arch``, ``cell``, ``features_dim``, ``channels`` are read).
    :returns: path of the copied ``teacher.safetensors``.
    :raises CheckpointError: missing or corrupt files, or a teacher made for other observations or action counts.
    :raises ConfigError: ``arch``, ``cell``, ``features_dim`` or ``channels`` differ from the saved teacher's.
    """
    src = TeacherFolder(src_dir)
    if not src.weights.is_file():
        raise CheckpointError(f"teacher.pretrained: {src.weights} not found; point it at a folder written by `digr teacher`")
    load_teacher(src.weights)
    spec = json.loads(src.spec.read_text())
    if spec["spaces"] != env_spaces:
        raise CheckpointError(
            f"teacher.pretrained: {src.root} was trained on {spec['spaces']}, but the env gives {env_spaces}; "
            "use the env it was trained on (see its provenance.json)"
        )
    if spec.get("policy") == "cnn":  # imported SB3 CnnPolicy: the Nature-DQN CNN
        saved = {**ARCH_DEFAULTS, "arch": "nature", "features_dim": spec["policy_kwargs"]["features_dim"]}
    else:  # the same reading of the spec as load_teacher
        saved = {**ARCH_DEFAULTS, **spec["policy_kwargs"]}
    fields = ("arch", "features_dim") if arch.arch == "nature" else tuple(ARCH_DEFAULTS)
    wanted = {k: list(getattr(arch, k)) if k == "channels" else getattr(arch, k) for k in fields}
    saved = {k: list(saved[k]) if k == "channels" else saved[k] for k in fields}
    diff = {f"teacher.{k}": (wanted[k], saved[k]) for k in fields if wanted[k] != saved[k]}
    if diff:
        raise ConfigError(
            f"teacher.pretrained: {src.root} has a different architecture; set "
            + ", ".join(f"{k}: {v[1]} (config has {v[0]})" for k, v in diff.items())
        )
    out.root.mkdir(parents=True, exist_ok=True)
    for name in ("curve", "imitation", "provenance", "evaluation", "sb3_zip", "spec", "weights"):
        source, target = getattr(src, name), getattr(out, name)
        if source.is_file():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        elif name != "weights":
            target.unlink(missing_ok=True)
    return out.weights


def install_teacher(cfg, out: TeacherFolder, env: gym.Env) -> str:
    """Install a ready teacher in a run's teacher folder instead of training one: a user's SB3 CnnPolicy zip
    (``cfg.sb3_zip``, :func:`digr.policies.sb3_zip.import_sb3_zip`) or a saved DIGR teacher (``cfg.pretrained``,
    :func:`copy_pretrained_teacher`), checked against ``env``'s spaces and the config's architecture.

    :param cfg: the teacher config section. :param env: an env of the run (its spaces are read; not closed here).
    :returns: what was installed (the zip's or the folder's path).
    :raises CheckpointError: unreadable files or a teacher made for other observations or action counts.
    :raises ConfigError: an architecture that differs from the config's, or neither source given.
    """
    spaces = teacher_spaces(env)
    if cfg.sb3_zip:
        obs = spaces["observation"]
        import_sb3_zip(cfg.sb3_zip, out, tuple(obs["image"]), spaces["n_actions"], has_side="side" in obs)
        return str(cfg.sb3_zip)
    if not cfg.pretrained:
        raise ConfigError("teacher: give teacher.sb3_zip or teacher.pretrained to install a ready teacher")
    copy_pretrained_teacher(cfg.pretrained, out, spaces, cfg)
    return str(cfg.pretrained)
