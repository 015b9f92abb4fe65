"""MiniGrid Fetch adapters with pixel observations (fully observable RGB render).

Two tasks, both registered as gymnasium ids on import of this module:

``DIGR/FetchColor{Green,Yellow,Blue}-8x8-v0`` (the default task)
    Modelled on the fetch-by-colour environment of the first author's public MiniGrid fork
    (``KarlXing/gym-minigrid:gym_minigrid/envs/fetchcolor.py``; that DIGR used it is likely, not confirmed).
    An 8×8 room (6×6 free cells) holds 3 objects, each a key or a ball, in the distinct colours green, yellow and
    blue. The target colour is fixed by the task id. The episode ends at the first pickup; the reward is
    ``1 − 0.9·t/T`` for the target and 0 for any other object (the fork gives −1, which made PPO learn never to pick
    anything up in our measurements). ``T = 5·size² = 320``. The image alone decides the action.

``DIGR/FetchMission-5x5-N2-v0`` and ``DIGR/FetchMission-8x8-N3-v0`` (the harder, mission-conditioned task)
    The standard MiniGrid Fetch (:class:`minigrid.envs.FetchEnv`): the target type and colour vary per episode and are
    given by the mission, which the policy receives as a side input (one-hot colour × type, 6·2 = 12 floats).

Both use the actions {0: turn left, 1: turn right, 2: forward, 3: pick up} and render the whole grid at
``tile_size`` pixels per cell (8 by default: 64×64×3 for the 8×8 room), returned channel-first.
``info["target_mask"]`` (bool ``(H, W)``) marks the pixels of the cells holding a target object.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_NAMES
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Key
from minigrid.envs import FetchEnv
from minigrid.minigrid_env import MiniGridEnv

__all__ = ["FETCH_COLORS", "OBJ_TYPES", "FetchColorEnv", "PixelFetchWrapper", "make_fetch_color", "make_fetch_mission"]

FETCH_COLORS = ("green", "yellow", "blue")
OBJ_TYPES = ("key", "ball")
N_ACTIONS = 4  # turn left, turn right, forward, pick up (MiniGrid's first four action codes)


class FetchColorEnv(MiniGridEnv):
    """Fetch-by-colour: pick up the one object whose colour is the fixed target colour.

    :param target_color: one of ``FETCH_COLORS``.
    :param size: room side in cells, walls included (8 → 6×6 free cells).
    :param num_objs: number of objects, at most ``len(FETCH_COLORS)``; colours are distinct, so exactly one is the target.
    :param max_steps: episode limit T; default ``5·size²``.
    :raises ValueError: unknown target colour or too many objects.
    """

    def __init__(self, target_color: str = "green", size: int = 8, num_objs: int = 3, max_steps: int | None = None, **kwargs):
        if target_color not in FETCH_COLORS:
            raise ValueError(f"target_color={target_color!r} is not one of {FETCH_COLORS}")
        if not 1 <= num_objs <= len(FETCH_COLORS):
            raise ValueError(f"num_objs={num_objs} must be in 1..{len(FETCH_COLORS)} (colours are distinct)")
        self.target_color = target_color
        self.num_objs = num_objs
        super().__init__(
            mission_space=MissionSpace(mission_func=lambda: f"fetch the {target_color} object"),
            grid_size=size,
            max_steps=5 * size**2 if max_steps is None else max_steps,
            see_through_walls=True,
            **kwargs,
        )

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        others = [c for c in FETCH_COLORS if c != self.target_color]
        colors = [self.target_color, *[others[i] for i in self._rand_perm(range(len(others)))][: self.num_objs - 1]]
        for color in colors:
            obj_cls = Key if self._rand_elem(OBJ_TYPES) == "key" else Ball
            self.place_obj(obj_cls(color))
        self.place_agent()
        self.mission = f"fetch the {self.target_color} object"

    def _rand_perm(self, items):
        items = list(items)
        return [items[i] for i in self.np_random.permutation(len(items))]

    def is_target(self, obj) -> bool:
        """True when ``obj`` is the target (its colour is the target colour)."""
        return obj is not None and obj.type in OBJ_TYPES and obj.color == self.target_color

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.carrying is not None:
            reward = self._reward() if self.is_target(self.carrying) else 0.0
            terminated = True
        return obs, reward, terminated, truncated, info


def _fetch_is_target(env: MiniGridEnv, obj) -> bool:
    if isinstance(env, FetchColorEnv):
        return env.is_target(obj)
    return obj is not None and obj.type == env.targetType and obj.color == env.targetColor


class PixelFetchWrapper(gym.Wrapper):
    """Turn a MiniGrid Fetch env into the DIGR env contract: Dict obs ``{"image": uint8 (3, H, W)[, "side": float32 (12,)]}``.

    ``image`` is the fully observable RGB render (``get_frame(highlight=False)``), ``H = W = size·tile_size``, values
    0..255. ``side`` (only with ``mission_side_input=True``) is the one-hot of (target colour, target type), index
    ``COLOR_NAMES.index(color)·2 + OBJ_TYPES.index(type)``. Actions are restricted to ``Discrete(4)``.
    ``info["target_mask"]`` is bool ``(H, W)``, True on the pixels of cells holding a target object;
    ``info["is_success"]`` is set when the episode ends (True iff the target was picked up).

    :raises TypeError: if ``env`` is not a MiniGrid env.
    """

    def __init__(self, env: gym.Env, tile_size: int = 8, mission_side_input: bool = False):
        super().__init__(env)
        if not isinstance(env.unwrapped, MiniGridEnv):
            raise TypeError(f"PixelFetchWrapper needs a MiniGrid env, got {type(env.unwrapped).__name__}")
        base = env.unwrapped
        self.tile_size = tile_size
        self.mission_side_input = mission_side_input
        h, w = base.height * tile_size, base.width * tile_size
        obs_spaces: dict[str, spaces.Space] = {"image": spaces.Box(0, 255, (3, h, w), np.uint8)}
        if mission_side_input:
            obs_spaces["side"] = spaces.Box(0.0, 1.0, (len(COLOR_NAMES) * len(OBJ_TYPES),), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._bg_key: tuple | None = None
        self._bg: tuple[np.ndarray, np.ndarray] | None = None

    def _cache_key(self) -> tuple:
        """What the agent-free frame and the target mask depend on: every cell's ``encode()`` triple (or None) and the
        episode's target (the mission task draws type and colour per episode, so two episodes can share a grid but not a
        target)."""
        base = self.env.unwrapped
        target = (getattr(base, "target_color", None), getattr(base, "targetType", None), getattr(base, "targetColor", None))
        return target, tuple(None if c is None else c.encode() for c in base.grid.grid)

    def _background(self) -> tuple[np.ndarray, np.ndarray]:
        """Frame without the agent (H, W, 3) uint8 and the target mask (H, W) bool, cached per :meth:`_cache_key`.

        MiniGrid's ``get_frame(highlight=False)`` renders all cells in Python and also computes the agent's view (unused
        without highlighting). The grid of a Fetch episode only changes at the pickup that ends it, so the agent-free
        background is rendered once per grid content and target, and each step only pastes the agent's tile; tiles come
        from MiniGrid's own tile cache, so frames are byte-identical to ``get_frame`` (tested). The returned arrays are
        the cache itself: callers copy before changing them.
        """
        base = self.env.unwrapped
        key = self._cache_key()
        if self._bg_key != key:
            t = self.tile_size
            frame = base.grid.render(t, agent_pos=(-1, -1), agent_dir=None, highlight_mask=None)
            mask = np.zeros(frame.shape[:2], dtype=bool)
            for j in range(base.height):
                for i in range(base.width):
                    if _fetch_is_target(base, base.grid.get(i, j)):
                        mask[j * t : (j + 1) * t, i * t : (i + 1) * t] = True
            self._bg_key, self._bg = key, (frame, mask)
        return self._bg

    def render_frame(self) -> np.ndarray:
        """Fully observable RGB frame (H, W, 3) uint8, equal to ``get_frame(highlight=False, tile_size, agent_pov=False)``."""
        return self._render()[0]

    def _render(self) -> tuple[np.ndarray, np.ndarray]:
        """(frame (H, W, 3) uint8, target mask (H, W) bool), both fresh arrays, from one cache lookup."""
        base = self.env.unwrapped
        background, mask = self._background()
        frame = background.copy()
        i, j = int(base.agent_pos[0]), int(base.agent_pos[1])
        t = self.tile_size
        frame[j * t : (j + 1) * t, i * t : (i + 1) * t] = Grid.render_tile(
            base.grid.get(i, j), agent_dir=base.agent_dir, highlight=False, tile_size=t
        )
        return frame, mask.copy()

    def _observe(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        base = self.env.unwrapped
        frame, mask = self._render()
        obs = {"image": np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.uint8)}
        if self.mission_side_input:
            side = np.zeros(self.observation_space["side"].shape, np.float32)
            side[COLOR_NAMES.index(base.targetColor) * len(OBJ_TYPES) + OBJ_TYPES.index(base.targetType)] = 1.0
            obs["side"] = side
        return obs, mask

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _, info = self.env.reset(seed=seed, options=options)
        obs, mask = self._observe()
        return obs, {**info, "target_mask": mask}

    def step(self, action):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} is outside Discrete({N_ACTIONS}) (left, right, forward, pickup)")
        _, reward, terminated, truncated, info = self.env.step(int(action))
        obs, mask = self._observe()
        info = {**info, "target_mask": mask}
        if terminated or truncated:
            carrying = self.env.unwrapped.carrying
            info["is_success"] = bool(terminated and _fetch_is_target(self.env.unwrapped, carrying))
        return obs, float(reward), terminated, truncated, info


def make_fetch_color(
    target_color: str = "green",
    size: int = 8,
    num_objs: int = 3,
    tile_size: int = 8,
    max_steps: int | None = None,
    render_mode: str | None = None,
) -> gym.Env:
    """Fetch-by-colour in the DIGR env contract (see module docstring). Returns a ``PixelFetchWrapper``."""
    env = FetchColorEnv(target_color=target_color, size=size, num_objs=num_objs, max_steps=max_steps, render_mode=render_mode)
    return PixelFetchWrapper(env, tile_size=tile_size, mission_side_input=False)


def make_fetch_mission(
    size: int = 5, num_objs: int = 2, tile_size: int = 8, max_steps: int | None = None, render_mode: str | None = None
) -> gym.Env:
    """Standard mission-conditioned MiniGrid Fetch with the mission one-hot as side input (see module docstring)."""
    env = FetchEnv(size=size, numObjs=num_objs, max_steps=max_steps, render_mode=render_mode)
    return PixelFetchWrapper(env, tile_size=tile_size, mission_side_input=True)


def _register() -> None:
    for color in FETCH_COLORS:
        env_id = f"DIGR/FetchColor{color.capitalize()}-8x8-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=make_fetch_color, kwargs={"target_color": color, "size": 8, "num_objs": 3})
    for size, n in ((5, 2), (8, 3)):
        env_id = f"DIGR/FetchMission-{size}x{size}-N{n}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=make_fetch_mission, kwargs={"size": size, "num_objs": n})


_register()
