"""The two contracts every part of DIGR shares, stated once: what a policy is and what an environment gives.

**Policy** (:class:`Policy`): a callable ``policy(image, side=None) -> output`` with

* ``image``: float32 ``[B, C, H, W]`` with values in [0, 1] (raw uint8 pixels / 255). Saliency maps, masks, the
  input-gradient penalty and attack budgets ε all live in these [0, 1] units (:func:`obs_to_tensors` converts
  observations);
* ``side``: float32 ``[B, K]`` side inputs or ``None``; saliency, masks, penalties and attacks pass it through untouched;
* ``output``: float32 ``[B, A]``. A *categorical* policy (the default) returns logits, unnormalised log-probabilities
  (an SB3 teacher, :class:`digr.policies.SB3Teacher`, returns normalised log-probabilities ``log π(·|s)``: the same
  distribution) and acts greedily by argmax. A *Gaussian* policy (continuous actions) sets the attribute
  ``action_distribution = "gaussian"``, returns the action mean μ(s) and has a state-independent ``log_std`` ``[A]``
  (:func:`is_gaussian`, :func:`policy_std`); it acts greedily with a = μ(s).

A policy with a critic also has ``value(image, side) -> [B]`` (:class:`Critic`; only the critic attack needs it).
Saliency methods, attacks, the distillation loss and the rollout engine all take a :class:`Policy`.

**Environment** (adapters in ``envs/`` follow it; :func:`check_contract` checks it; :func:`make_env` loads one):

* ``observation_space``: a :class:`gymnasium.spaces.Dict` with ``"image"``, a uint8 Box ``(C, H, W)`` with values
  0..255, and optionally ``"side"``, a float32 Box ``(K,)``; no other keys;
* ``action_space``: :class:`gymnasium.spaces.Discrete` (categorical policies) or a 1-D float
  :class:`gymnasium.spaces.Box` (Gaussian policies; the rollout engine clips actions into it);
* ``info`` may carry the keys of :data:`INFO_KEYS` (checked by :func:`check_info`): ``"target_mask"`` (ground-truth
  pixels for localisation metrics), ``"is_success"`` (at an episode's end) and ``"game_score"`` (Atari: the true score
  of a whole game, where the training env ends episodes at a lost life and clips rewards).

Core code never imports an adapter by name: a config names it as ``"module:EnvId"`` and :func:`make_env` imports the
module, which registers the id.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces

from digr.errors import ConfigError, EnvContractError, UnknownEnvError

__all__ = [
    "INFO_KEYS",
    "Critic",
    "Policy",
    "categorical_kl",
    "check_contract",
    "check_info",
    "greedy_action",
    "is_gaussian",
    "make_env",
    "obs_to_tensors",
    "policy_device",
    "policy_std",
    "stack_obs",
    "weights_finite",
]


# ------------------------------------------------------------------------------------------------------------ policies


@runtime_checkable
class Policy(Protocol):
    """``policy(image [B,C,H,W] float in [0,1], side [B,K] | None) -> output [B,A]`` (logits, or μ for Gaussian
    policies); see the module docstring."""

    def __call__(self, image: th.Tensor, side: th.Tensor | None = None, /) -> th.Tensor: ...


@runtime_checkable
class Critic(Protocol):
    """A policy with a value head: ``value(image [B,C,H,W] in [0,1], side [B,K] | None) -> V(s) [B]``."""

    def value(self, image: th.Tensor, side: th.Tensor | None = None, /) -> th.Tensor: ...


def is_gaussian(policy: Policy) -> bool:
    """True for a Gaussian (continuous-action) policy, i.e. ``policy.action_distribution == "gaussian"``.

    :raises ValueError: ``action_distribution`` is set to something other than ``"categorical"`` or ``"gaussian"``.
    """
    kind = getattr(policy, "action_distribution", "categorical")
    if kind not in ("categorical", "gaussian"):
        raise ValueError(
            f"{type(policy).__name__}.action_distribution={kind!r}; set it to 'categorical' (logits) or "
            "'gaussian' (forward returns the action mean, log_std holds the log standard deviation)"
        )
    return kind == "gaussian"


def policy_std(policy: Policy) -> th.Tensor:
    """σ = exp(log_std) of a Gaussian policy, float ``[A]`` > 0, detached.

    :raises AttributeError: the policy has no ``log_std``; add a state-independent ``log_std`` tensor ``[A]``.
    """
    log_std = getattr(policy, "log_std", None)
    if log_std is None:
        raise AttributeError(
            f"Gaussian policy {type(policy).__name__} has no `log_std`; give it a tensor/parameter [A] "
            "with the log standard deviation of its actions"
        )
    return th.as_tensor(log_std).detach().exp().reshape(-1)


def policy_device(policy: Policy) -> th.device:
    """The device of a policy's parameters (CPU for a policy without parameters, e.g. a plain function)."""
    try:
        return next(policy.parameters()).device
    except (StopIteration, AttributeError):
        return th.device("cpu")


def weights_finite(module: th.nn.Module) -> bool:
    """True if every parameter of ``module`` is finite (no NaN, no ±inf): the check after a training update."""
    return all(bool(th.isfinite(p).all()) for p in module.parameters())


def greedy_action(policy: Policy, image: th.Tensor, side: th.Tensor | None = None) -> th.Tensor:
    """The policy's greedy action, computed without gradients: argmax of the logits, int64 ``[B]`` (categorical), or
    the mean μ(s), float ``[B, A]`` (Gaussian).

    :param image: float ``[B, C, H, W]`` in [0, 1]. :param side: float ``[B, K]`` or None.
    """
    with th.no_grad():
        output = policy(image, side)
    return output if is_gaussian(policy) else output.argmax(dim=1)


def categorical_kl(p_logits: th.Tensor, q_logits: th.Tensor) -> th.Tensor:
    """KL(p ‖ q) = Σ_a p_a (log p_a − log q_a) of two categorical distributions given by logits, per row, in nats.

    :param p_logits: float ``[..., A]``, logits (or log-probabilities) of p. :param q_logits: float ``[..., A]``, of q.
    :returns: float ``[...]`` (≥ 0 up to rounding: identical inputs can give −1e-9; clamp where a sign matters).
    Used by the distillation loss (KL(π_T ‖ π_S), Rusu et al. 2016), the MAD attack and the attack and faithfulness
    measurements (KL(π(·|s) ‖ π(·|s'))).
    """
    log_p, log_q = F.log_softmax(p_logits, dim=-1), F.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


# -------------------------------------------------------------------------------------------------------- observations


def obs_to_tensors(obs: dict, device: str | th.device = "cpu") -> tuple[th.Tensor, th.Tensor | None]:
    """Convert a contract observation ``{"image": uint8 [B,C,H,W] or [C,H,W], "side": float [B,K] or [K]}`` to
    ``(image float32 [B,C,H,W] in [0,1], side float32 [B,K] or None)`` on ``device``."""
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


def stack_obs(observations: list[dict]) -> dict:
    """Stack single contract observations into one batched observation ``{"image": [B,C,H,W], "side": [B,K]}``."""
    batch = {"image": np.stack([o["image"] for o in observations])}
    if "side" in observations[0]:
        batch["side"] = np.stack([o["side"] for o in observations])
    return batch


# -------------------------------------------------------------------------------------------------------- environments

#: The optional ``info`` keys of the env contract, with what they hold.
INFO_KEYS = {
    "target_mask": "bool (H, W): ground-truth pixels of the task-relevant object (localisation metrics)",
    "region_masks": "{name: bool (H, W)}: more ground-truth regions, each scored like target_mask (e.g. CarRacing's "
    "'road_ahead'); the same names on every step",
    "is_success": "bool, on the last step of an episode: whether the task was solved",
    "game_score": "{'r': float true score, 'l': int agent steps} on the step a whole game ends, else None (Atari)",
}


def make_env(env_id: str, **kwargs) -> gym.Env:
    """Create an environment from ``"module:EnvId"`` (the module registers ``EnvId``) or a plain registered id.

    :param env_id: e.g. ``"envs.minigrid:DIGR/FetchColorGreen-8x8-v0"``.
    :param kwargs: passed to ``gymnasium.make``.
    :returns: an env that satisfies the contract (checked by :func:`check_contract`).
    :raises UnknownEnvError: the module cannot be imported or the id is not registered (with close matches).
    :raises EnvContractError: the env breaks the contract.
    :raises ConfigError: ``kwargs`` holds a keyword the env's constructor does not take.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownEnvError(
                f"env.id {env_id!r}: cannot import module {module!r} ({e}); is the adapter installed?"
            ) from e
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.5)
        hint = f" Close matches: {close}." if close else ""
        raise UnknownEnvError(
            f"env.id {env_id!r}: {name!r} is not a registered gymnasium id.{hint} "
            "Prefix the module that registers it, e.g. 'envs.minigrid:DIGR/FetchColorGreen-8x8-v0'."
        )
    try:
        env = gym.make(name, **kwargs)
    except TypeError as e:  # an env kwarg its constructor does not take
        raise ConfigError(f"env.kwargs {kwargs} do not fit env {env_id!r}: {e}; fix or remove the key in env.kwargs") from e
    check_contract(env)
    return env


def check_contract(env: gym.Env, info: dict | None = None) -> None:
    """Check that ``env`` follows the environment contract (module docstring); with ``info`` (e.g. from a reset), check
    its contract keys too (:func:`check_info`).

    :raises EnvContractError: naming what is wrong: the observation space or its keys, the image's dtype or shape, the
        side input's dtype or shape, the action space, or an ``info`` key.
    """
    space = env.observation_space
    if not isinstance(space, spaces.Dict) or "image" not in space.spaces:
        raise EnvContractError(
            f"observation space must be a Dict with an 'image' key, got {space}; wrap the env (see envs/minigrid.py)"
        )
    image = space["image"]
    if not isinstance(image, spaces.Box) or len(image.shape) != 3 or image.dtype != np.uint8:
        raise EnvContractError(f"'image' must be a uint8 Box of shape (C, H, W), got {image}")
    extra = set(space.spaces) - {"image", "side"}
    if extra:
        raise EnvContractError(f"unexpected observation keys {sorted(extra)}; only 'image' and 'side' are allowed")
    side = space.spaces.get("side")
    if side is not None and (not isinstance(side, spaces.Box) or len(side.shape) != 1 or side.dtype != np.float32):
        raise EnvContractError(f"'side' must be a float32 Box of shape (K,), got {side}; cast it with np.float32")
    act = env.action_space
    if not (
        isinstance(act, spaces.Discrete) or (isinstance(act, spaces.Box) and len(act.shape) == 1 and act.dtype.kind == "f")
    ):
        raise EnvContractError(f"action space must be Discrete or a 1-D float Box, got {act}")
    if info is not None:
        check_info(info, image.shape[1:])


def check_info(info: dict, image_hw: tuple[int, int]) -> None:
    """Check the contract keys of one ``info`` dict (:data:`INFO_KEYS`); other keys are free.

    :param image_hw: ``(H, W)`` of the env's image.
    :raises EnvContractError: a contract key with the wrong type or shape.
    """
    mask = info.get("target_mask")
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.shape != tuple(image_hw)):
        raise EnvContractError(
            f"info['target_mask'] must be a bool array of shape {tuple(image_hw)}, got {getattr(mask, 'dtype', type(mask))}"
        )
    regions = info.get("region_masks")
    if regions is not None and not (
        isinstance(regions, dict)
        and all(isinstance(m, np.ndarray) and m.dtype == bool and m.shape == tuple(image_hw) for m in regions.values())
    ):
        raise EnvContractError(f"info['region_masks'] must be a dict of bool arrays of shape {tuple(image_hw)}")
    if "is_success" in info and not isinstance(info["is_success"], (bool, np.bool_)):
        raise EnvContractError(f"info['is_success'] must be a bool, got {info['is_success']!r}")
    score = info.get("game_score")
    if score is not None and not (isinstance(score, dict) and {"r", "l"} <= set(score)):
        raise EnvContractError(f"info['game_score'] must be None or {{'r': score, 'l': steps}}, got {score!r}")
