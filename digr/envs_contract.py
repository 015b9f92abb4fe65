"""Loading environments by config id, and the DIGR environment contract.

The contract (all adapters in ``envs/`` follow it): observations are a ``gymnasium.spaces.Dict`` with ``"image"``
(uint8 ``(C, H, W)``, 0..255) and optionally ``"side"`` (float32 vector passed through untouched by saliency, masks,
penalties and attacks); ``info`` may carry ``"target_mask"`` (bool ``(H, W)``) and, at episode end, ``"is_success"``.
Core code never imports an adapter by name: :func:`make_env` imports the module named in the id.
"""

from __future__ import annotations

import difflib
import importlib

import gymnasium as gym
from gymnasium import spaces

__all__ = ["UnknownEnvError", "make_env", "check_contract"]


class UnknownEnvError(ValueError):
    """The env id (or the module before its colon) cannot be found."""


def make_env(env_id: str, **kwargs) -> gym.Env:
    """Create an environment from ``"module:EnvId"`` (the module registers ``EnvId``) or a plain registered id.

    :param env_id: e.g. ``"envs.minigrid:DIGR/FetchColorGreen-8x8-v0"``.
    :param kwargs: passed to ``gymnasium.make``.
    :returns: an env that satisfies the DIGR contract (checked by :func:`check_contract`).
    :raises UnknownEnvError: the module cannot be imported or the id is not registered (with close matches).
    :raises TypeError: the env breaks the contract.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownEnvError(f"env.id {env_id!r}: cannot import module {module!r} ({e}); is the adapter installed?") from e
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.5)
        hint = f" Close matches: {close}." if close else ""
        raise UnknownEnvError(f"env.id {env_id!r}: {name!r} is not a registered gymnasium id.{hint} "
                              "Prefix the module that registers it, e.g. 'envs.minigrid:DIGR/FetchColorGreen-8x8-v0'.")
    env = gym.make(name, **kwargs)
    check_contract(env)
    return env


def check_contract(env: gym.Env) -> None:
    """Raise ``TypeError`` (naming what is wrong) unless ``env`` follows the DIGR environment contract."""
    space = env.observation_space
    if not isinstance(space, spaces.Dict) or "image" not in space.spaces:
        raise TypeError(f"observation space must be a Dict with an 'image' key, got {space}; wrap the env (see envs/minigrid.py)")
    image = space["image"]
    if not isinstance(image, spaces.Box) or len(image.shape) != 3 or image.dtype.name != "uint8":
        raise TypeError(f"'image' must be a uint8 Box of shape (C, H, W), got {image}")
    extra = set(space.spaces) - {"image", "side"}
    if extra:
        raise TypeError(f"unexpected observation keys {sorted(extra)}; only 'image' and 'side' are allowed")
