"""Policy adapters: everything DIGR differentiates or perturbs is a callable ``(image, side) -> logits``.

* ``image``: float32 ``[B, C, H, W]`` with values in [0, 1] (raw uint8 pixels / 255). All saliency maps, masks,
  penalties and attack budgets in DIGR live in these [0, 1] units.
* ``side``: float32 ``[B, K]`` side inputs or ``None``; passed through untouched.
* returns: float32 logits ``[B, A]`` (unnormalised log-probabilities of a categorical policy).

:class:`SB3Teacher` adapts a Stable-Baselines3 actor-critic policy through public API only
(``policy.get_distribution(obs).distribution.logits`` and ``policy.predict_values``). SB3 divides uint8 image
observations by 255 inside the policy, so the adapter hands it ``255·image``: gradients then come out per [0, 1] unit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from digr.checkpoint import CheckpointError, load_state_dict, save_state_dict, write_text_atomic
from digr.nets import PolicyNet

__all__ = ["SB3Teacher", "load_student", "save_student", "obs_to_tensors", "greedy_action"]


def obs_to_tensors(obs: dict, device: str | th.device = "cpu") -> tuple[th.Tensor, th.Tensor | None]:
    """Convert a (batched) contract observation ``{"image": uint8 [B,C,H,W] or [C,H,W], "side": ...}`` to
    ``(image float32 [B,C,H,W] in [0,1], side float32 [B,K] or None)``."""
    image = th.as_tensor(np.asarray(obs["image"]), device=device)
    if image.ndim == 3:
        image = image.unsqueeze(0)
    image = image.float() / 255.0
    side = obs.get("side")
    if side is not None:
        side = th.as_tensor(np.asarray(side), dtype=th.float32, device=device)
        if side.ndim == 1:
            side = side.unsqueeze(0)
    return image, side


class SB3Teacher(nn.Module):
    """Wrap an SB3 ``ActorCriticPolicy`` (Dict obs with ``"image"`` uint8 and optional ``"side"``, or a Box image
    observation as SB3's ``CnnPolicy``) as a DIGR policy.

    ``forward(image, side)`` returns the actor's logits ``[B, A]``; :meth:`value` returns the critic ``[B]``.
    Both accept gradients w.r.t. ``image`` (units: per [0, 1] pixel value).
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


def greedy_action(policy: nn.Module, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
    """argmax of the logits, int64 ``[B]``, computed without gradients."""
    with th.no_grad():
        return policy(image, side).argmax(dim=1)


def save_student(student: PolicyNet, path: str | Path) -> None:
    """Save a student as ``path`` (safetensors weights) plus ``path.json`` (constructor spec). Atomic writes."""
    path = Path(path)
    save_state_dict(student.state_dict(), path)
    write_text_atomic(path.with_suffix(".json"), json.dumps(student.spec, indent=2))


def load_student(path: str | Path, device: str = "cpu") -> PolicyNet:
    """Rebuild a student saved by :func:`save_student` (no unpickling).

    :raises CheckpointError: missing or corrupt weights/spec, or weights that do not fit the spec.
    """
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise CheckpointError(f"student spec {spec_path} is missing; re-run `digr distill` to recreate the student")
    try:
        spec = json.loads(spec_path.read_text())
        student = PolicyNet(**spec)
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"student spec {spec_path} is corrupt ({e}); delete it and re-run `digr distill`") from e
    try:
        student.load_state_dict(load_state_dict(path))
    except RuntimeError as e:
        raise CheckpointError(f"weights {path} do not match spec {spec_path}: {e}") from e
    return student.to(device).eval()
