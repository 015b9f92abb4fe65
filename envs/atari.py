"""Atari 2600 adapters (ALE via ``ale-py``) with the DeepMind preprocessing, in the DIGR env contract.

Registered on import of this module (``env.id: "envs.atari:DIGR/Breakout-train-v0"``):

``DIGR/Breakout-train-v0`` (training)
    Episodic life (a life loss ends the episode; the next ``reset()`` continues the same game) and rewards clipped to
    their sign, {−1, 0, +1}.
``DIGR/Breakout-eval-v0`` (evaluation)
    Full games (all lives), true unclipped scores. After a lost life the ball is relaunched automatically
    (``fire_on_life_loss``, see :func:`make_atari`) so that each life starts exactly as in training.

Both are registered with ``max_episode_steps=27_000`` agent steps (gymnasium ``TimeLimit``; override with
``gym.make(id, max_episode_steps=N)``) and ALE's own cap of 108,000 emulator frames per game (``max_episode_frames``),
i.e. 30 minutes of play. In the training env the ``TimeLimit`` counts the steps of one life, the ALE cap those of
one game. The two caps coincide for a full game up to the ≤ 30 no-op frames of the reset.

Wrapper stack (inside out; ``make_atari`` builds it, ``gym.make`` adds the outer ``TimeLimit``, ``OrderEnforcing``
and ``PassiveEnvChecker``)::

    ale_py AtariEnv "ALE/Breakout-v5"   frameskip=1, obs_type="grayscale", repeat_action_probability=0.25,
                                        full_action_space=False, max_num_frames_per_episode=108_000
    gymnasium AtariPreprocessing        noop_max=30, frame_skip=4 (max-pool of the last two frames),
                                        screen_size=84, grayscale_obs=True, terminal_on_life_loss=False
    GameScore                           info["game_score"] = {"r": true score, "l": steps} when the game ends
    [train] EpisodicLife                SB3's EpisodicLifeEnv; a reset with a seed is always a real reset
    [eval]  FireOnLifeLoss              after a lost life: NOOP, FIRE, RIGHT (what training's reset does), then FIRE
                                        until the RAM shows the ball in play
    FireOnReset                         after every reset: FIRE, RIGHT (as SB3's FireResetEnv), then FIRE until the
                                        ball is in play; games with FIRE only
    [eval]  ObjectMasks                 info["target_mask"], info["region_masks"]: ball and paddle from the RAM
    [train] ClipRewardEnv               SB3's sign clipping
    gymnasium FrameStackObservation     4 frames, padding_type="reset" (the first frame is repeated at reset)
    ImageDict                           {"image": uint8 (4, 84, 84)}

Preprocessing source: Mnih et al. 2015, "Human-level control through deep reinforcement learning", Nature 518
(no-op starts ≤ 30, action repeat 4 with max over the last two frames, 84×84 luminance, 4-frame stack, reward
clipping, life loss as episode end in training); Machado et al. 2018, "Revisiting the Arcade Learning Environment",
JAIR 61 (sticky actions with probability 0.25 in place of no-op starts as the source of stochasticity, full games with
true scores for evaluation, the 108k-frame cap: the ``-v5`` protocol). We keep both no-op starts and sticky actions,
as gymnasium's ``AtariPreprocessing`` on ``-v5`` does.

**Sticky actions.** The default ``repeat_action_probability=0.25`` is the ``-v5`` / Machado et al. default. SB3's
``AtariWrapper`` and the RL-Zoo train on ``*NoFrameskip-v4`` ids, i.e. *without* sticky actions (SB3's
``action_repeat_probability`` defaults to 0.0); pass ``repeat_action_probability=0.0`` to match them.

Contract: observations are ``{"image": uint8 (4, 84, 84)}``, values 0..255, channel k = frame t−3+k (oldest first),
no ``"side"``. Actions are ``Discrete(n)`` over the game's minimal action set (Breakout: 0 NOOP, 1 FIRE, 2 RIGHT,
3 LEFT). ``info`` carries ALE's ``"lives"``, ``"episode_frame_number"`` and ``"frame_number"``. The eval env of a game
with RAM annotations (Breakout) adds ground truth for saliency localisation read from the emulator's RAM
(:class:`ObjectMasks`): ``info["region_masks"]`` ``{"ball", "paddle"}`` and ``info["target_mask"]`` (their union),
bool ``(84, 84)``. There is no ``"is_success"``: the return (the game score in the eval env) is the metric.

**Sticky actions and FIRE.** Under sticky actions the FIRE that relaunches the ball can be swallowed by the repeated
previous action (measured: 3 of 590 relaunches and 1 of 150 resets with p = 0.25), and a greedy agent that never
learnt FIRE then idles until the 27,000-step cap. The FIRE wrappers therefore press FIRE again until the RAM shows the
ball in play (at most :data:`MAX_FIRE` times), which makes the sticky protocol of Machado et al. 2018 usable for
evaluation (``evaluate.env_kwargs: {repeat_action_probability: 0.25}``).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from stable_baselines3.common.atari_wrappers import ClipRewardEnv, EpisodicLifeEnv

__all__ = [
    "ATARI_GAMES",
    "MAX_EPISODE_STEPS",
    "MAX_FIRE",
    "MODES",
    "RAM_OBJECTS",
    "EpisodicLife",
    "FireOnLifeLoss",
    "FireOnReset",
    "ImageDict",
    "ObjectMasks",
    "RamObjects",
    "atari_frames_to_hwc",
    "make_atari",
]

gym.register_envs(ale_py)

ATARI_GAMES = ("Breakout",)  # games with registered DIGR ids
MODES = ("train", "eval")
MAX_EPISODE_STEPS = 27_000  # agent steps = 108,000 frames at frame_skip 4
MAX_FIRE = 8  # extra FIREs at most after a reset or a lost life until the RAM shows the ball in play


class EpisodicLife(EpisodicLifeEnv):
    """SB3's :class:`~stable_baselines3.common.atari_wrappers.EpisodicLifeEnv` (DeepMind's episodic life): a lost life
    returns ``terminated=True``; the next ``reset()`` continues the same game with one NOOP step, unless the game was
    really over (then a real reset). Unlike SB3's, a ``reset(seed=...)`` is always a real reset, so seeded episodes
    are reproducible.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.was_real_done = True
        return super().reset(seed=seed, options=options)


@dataclass(frozen=True)
class RamObjects:
    """Where a game keeps its objects in the 128-byte RAM, and how RAM values map to the native 160×210 screen.

    Breakout (the one game annotated): ``ball_x`` = RAM[99], ``ball_y`` = RAM[101], ``player_x`` (paddle) = RAM[72] as
    in AtariARI (Anand et al. 2019, "Unsupervised State Representation Learning in Atari", NeurIPS, arXiv 1906.08226,
    ``atariari/benchmark/ram_annotations.py``); the screen offsets, sizes and the "no ball" rule follow OCAtari (Delfosse
    et al. 2023, "OCAtari: Object-Centric Atari 2600 Reinforcement Learning Environments", arXiv 2306.08649,
    ``ocatari/ram/breakout.py``): paddle left edge x = RAM[72] − 47, top y = 189, 16×4 px; ball left x = RAM[99] − 49,
    top y = RAM[101] + 9, 2×4 px, present iff RAM[101] ≠ 0 and RAM[101] + 9 ≤ 196. ``tests/test_atari_env.py``
    checks them against the rendered screen (pixel-exact on the paddle and on ≥ 99 % of ball frames).
    """

    ball_x: int
    ball_y: int
    player_x: int
    ball_dx: int
    ball_dy: int
    player_dx: int
    player_y: int
    ball_wh: tuple[int, int]
    player_wh: tuple[int, int]
    ball_y_max: int

    def ball(self, ram: np.ndarray) -> tuple[int, int, int, int] | None:
        """The ball's box ``(x, y, w, h)`` in native screen pixels, or None when no ball is in play."""
        y = int(ram[self.ball_y])
        if y == 0 or y + self.ball_dy > self.ball_y_max:
            return None
        return int(ram[self.ball_x]) + self.ball_dx, y + self.ball_dy, *self.ball_wh

    def paddle(self, ram: np.ndarray) -> tuple[int, int, int, int]:
        """The player's paddle box ``(x, y, w, h)`` in native screen pixels."""
        return int(ram[self.player_x]) + self.player_dx, self.player_y, *self.player_wh


RAM_OBJECTS = {
    "Breakout": RamObjects(
        ball_x=99,
        ball_y=101,
        player_x=72,
        ball_dx=-49,
        ball_dy=9,
        player_dx=-47,
        player_y=189,
        ball_wh=(2, 4),
        player_wh=(16, 4),
        ball_y_max=196,
    )
}
"""Games whose objects DIGR reads from RAM (ball-in-play check after FIRE, ground-truth object masks)."""


def _ram_objects(env: gym.Env) -> RamObjects | None:
    return RAM_OBJECTS.get(getattr(env.unwrapped, "_digr_game", None))


def _ball_in_play(env: gym.Env) -> bool:
    """True when the game's RAM shows a ball in play, or when the game has no RAM annotation (nothing to check)."""
    objects = _ram_objects(env)
    return objects is None or objects.ball(env.unwrapped.ale.getRAM()) is not None


def _fire_until_in_play(env: gym.Env, obs, reward: float, terminated: bool, truncated: bool, info: dict, max_fire: int):
    """Press FIRE (action 1) until the ball is in play, at most ``max_fire`` times, accumulating the reward; stops when
    the game ends. With sticky actions (Machado et al. 2018) a FIRE can be swallowed by the repeated previous action
    (about 1 relaunch in 200 under p = 0.25, measured), and an agent that never learnt to press FIRE would then idle
    until the frame cap."""
    for _ in range(max_fire):
        if terminated or truncated or _ball_in_play(env):
            break
        obs, r, terminated, truncated, info = env.step(1)
        reward += r
    return obs, reward, terminated, truncated, info


def _has_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def _require_fire(env: gym.Env, who: str) -> None:
    if not _has_fire(env):
        raise ValueError(f"{who} needs action 1 == 'FIRE' and ≥ 3 actions, got {env.unwrapped.get_action_meanings()}")


class FireOnReset(gym.Wrapper):
    """After each ``reset()`` take FIRE (action 1) then action 2, as SB3's ``FireResetEnv`` (games such as Breakout
    stand still until FIRE is pressed), then, in a game with RAM annotations, FIRE until the ball is in play (at most
    :data:`MAX_FIRE` times). Rewards of these steps are dropped (they are 0 in Breakout); if the game ends during them
    the env is reset again. Keeps the reset ``info`` (SB3's returns ``{}``).

    :raises ValueError: the game's action 1 is not FIRE or it has fewer than 3 actions.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        _require_fire(env, "FireOnReset")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = _fire_until_in_play(self.env, obs, 0.0, False, False, info, MAX_FIRE)
        if terminated or truncated:
            obs, info = self.env.reset(seed=seed, options=options)
        return obs, info


class FireOnLifeLoss(gym.Wrapper):
    """Evaluation counterpart of episodic life + fire-on-reset: when a life is lost (and the game goes on), take NOOP,
    FIRE, RIGHT (actions 0, 1, 2) inside the same ``step()``, then, in a game with RAM annotations (:data:`RAM_OBJECTS`),
    FIRE again until the ball is in play (at most :data:`MAX_FIRE` times: sticky actions can swallow a FIRE), so the
    next observation is the relaunched ball, as at the start of each life in training. Rewards of the extra steps are
    added (the score stays true); the game is not reset. Without it a greedy agent that never learnt to press FIRE would
    idle until the frame cap.

    :raises ValueError: the game's action 1 is not FIRE or it has fewer than 3 actions.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        _require_fire(env, "FireOnLifeLoss")
        self.lives = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            for extra in (0, 1, 2):
                if terminated or truncated:
                    break
                obs, r, terminated, truncated, info = self.env.step(extra)
                reward += r
            obs, reward, terminated, truncated, info = _fire_until_in_play(
                self.env, obs, reward, terminated, truncated, info, MAX_FIRE
            )
        self.lives = self.env.unwrapped.ale.lives()
        return obs, reward, terminated, truncated, info


class GameScore(gym.Wrapper):
    """Puts the true, unclipped score of a whole game into ``info["game_score"] = {"r": score, "l": agent steps}`` on the
    step where the game ends (terminated or truncated), and None elsewhere.

    It sits right above the frame-skipping preprocessing, below episodic life and reward clipping, so training logs
    can show real game scores (what RL-Zoo's inner ``Monitor`` does) while the agent learns from per-life episodes.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._score, self._steps = 0.0, 0

    def reset(self, **kwargs):
        self._score, self._steps = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._score += float(reward)
        self._steps += 1
        info["game_score"] = {"r": self._score, "l": self._steps} if terminated or truncated else None
        return obs, reward, terminated, truncated, info


class ImageDict(gym.ObservationWrapper):
    """Wrap a uint8 ``(C, H, W)`` Box observation as the DIGR contract's ``{"image": uint8 (C, H, W)}`` (0..255).

    :raises TypeError: the wrapped observation space is not a 3-d uint8 Box.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 3 or space.dtype != np.uint8:
            raise TypeError(f"ImageDict needs a uint8 Box of shape (C, H, W), got {space}")
        self.observation_space = spaces.Dict({"image": spaces.Box(0, 255, space.shape, np.uint8)})

    def observation(self, observation) -> dict[str, np.ndarray]:
        return {"image": np.asarray(observation, dtype=np.uint8)}


class ObjectMasks(gym.Wrapper):
    """Ground truth for saliency localisation from the emulator's RAM (:class:`RamObjects`): every ``reset`` and
    ``step`` info gets ``info["region_masks"] = {"ball": bool [S, S], "paddle": bool [S, S]}`` and
    ``info["target_mask"]`` = their union, on the ``S``×``S`` observation (native 160×210 boxes scaled by S/160 and
    S/210, rounded outwards, then grown by ``margin`` observation pixels on each side: "near" the object, since the
    4-frame stack and the max over two emulator frames smear a moving ball). The ball mask is all-False while no ball
    is in play. The masks describe the newest frame of the stack.

    :param screen_size: S, the side of the observation. :param margin: observation pixels added around each box, ≥ 0.
    :raises ValueError: the game has no RAM annotation in :data:`RAM_OBJECTS`.
    """

    def __init__(self, env: gym.Env, screen_size: int, margin: int = 2):
        super().__init__(env)
        self.objects = _ram_objects(env)
        if self.objects is None:
            raise ValueError(f"ObjectMasks needs a game in RAM_OBJECTS {sorted(RAM_OBJECTS)}; pass object_masks=False")
        self.size, self.margin = screen_size, margin

    def _box(self, box: tuple[int, int, int, int] | None) -> np.ndarray:
        mask = np.zeros((self.size, self.size), dtype=bool)
        if box is not None:
            x, y, w, h = box
            sx, sy, m = self.size / 160, self.size / 210, self.margin
            r0, r1 = max(0, int(np.floor(y * sy)) - m), min(self.size, int(np.ceil((y + h) * sy)) + m)
            c0, c1 = max(0, int(np.floor(x * sx)) - m), min(self.size, int(np.ceil((x + w) * sx)) + m)
            mask[r0:r1, c0:c1] = True
        return mask

    def _annotate(self, info: dict) -> dict:
        ram = self.env.unwrapped.ale.getRAM()
        regions = {"ball": self._box(self.objects.ball(ram)), "paddle": self._box(self.objects.paddle(ram))}
        info["region_masks"] = regions
        info["target_mask"] = regions["ball"] | regions["paddle"]
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._annotate(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._annotate(info)


def make_atari(
    game: str = "Breakout",
    mode: str = "train",
    *,
    repeat_action_probability: float = 0.25,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    frame_stack: int = 4,
    max_episode_frames: int = 108_000,
    fire_on_reset: bool | None = None,
    fire_on_life_loss: bool | None = None,
    full_action_space: bool = False,
    render_mode: str | None = None,
    object_masks: bool | None = None,
    object_margin: int = 2,
) -> gym.Env:
    """Build an ALE game with the DeepMind preprocessing in the DIGR contract (wrapper stack: module docstring).

    :param game: ALE game name as in ``ALE/<game>-v5`` (e.g. ``"Breakout"``, ``"Pong"``).
    :param mode: ``"train"`` (episodic life, sign-clipped rewards) or ``"eval"`` (full games, true scores).
    :param repeat_action_probability: sticky-action probability in [0, 1] applied per emulator frame (0.25: ``-v5``,
        Machado et al. 2018; 0.0: SB3 / RL-Zoo ``NoFrameskip-v4``).
    :param noop_max: reset takes a uniform random 1..``noop_max`` NOOPs (0 disables), drawn from the env's seeded RNG.
    :param frame_skip: emulator frames per agent step (action repeat), the observation is the max of the last two.
    :param screen_size: side of the square grayscale frame (INTER_AREA resize).
    :param frame_stack: frames stacked as channels, oldest first; at reset the first frame is repeated.
    :param max_episode_frames: ALE truncates a game after this many emulator frames (no-op frames included); 0 = no cap.
    :param fire_on_reset: press FIRE, RIGHT after each reset; ``None``: iff the game's action 1 is FIRE.
    :param fire_on_life_loss: eval only: press NOOP, FIRE, RIGHT after a lost life; ``None``: as ``fire_on_reset``.
        Ignored in ``"train"`` mode (a lost life ends the episode there).
    :param full_action_space: use all 18 ALE actions instead of the game's minimal set.
    :param render_mode: ``None`` or ``"rgb_array"`` (``render()`` gives the RGB screen, uint8 (210, 160, 3)).
    :param object_masks: add the RAM ground truth (:class:`ObjectMasks`: ``info["target_mask"]`` and
        ``info["region_masks"]`` ball / paddle); ``None``: in ``"eval"`` mode for games in :data:`RAM_OBJECTS`.
    :param object_margin: observation pixels around each object box in those masks.
    :returns: env with ``observation_space = Dict(image=Box(0, 255, (frame_stack, screen_size, screen_size), uint8))``
        and ``action_space = Discrete(n)``.
    :raises ValueError: unknown ``mode``, out-of-range arguments, or FIRE wrappers asked for a game without FIRE.
    :raises gymnasium.error.Error: unknown ALE game.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    if not 0.0 <= repeat_action_probability <= 1.0:
        raise ValueError(f"repeat_action_probability={repeat_action_probability} must be in [0, 1]")
    for name, value, low in (
        ("noop_max", noop_max, 0),
        ("frame_skip", frame_skip, 1),
        ("screen_size", screen_size, 1),
        ("frame_stack", frame_stack, 1),
        ("max_episode_frames", max_episode_frames, 0),
        ("object_margin", object_margin, 0),
    ):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer ≥ {low}")
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,
        obs_type="grayscale",
        repeat_action_probability=float(repeat_action_probability),
        full_action_space=full_action_space,
        max_num_frames_per_episode=int(max_episode_frames),
        render_mode=render_mode,
    )
    env.unwrapped._digr_game = game  # the RAM annotation to use (RAM_OBJECTS)
    env = AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        grayscale_newaxis=False,
        scale_obs=False,
    )
    env = GameScore(env)
    fire = _has_fire(env) if fire_on_reset is None else fire_on_reset
    fire_life = fire if fire_on_life_loss is None else fire_on_life_loss
    if mode == "train":
        env = EpisodicLife(env)
    elif fire_life:
        env = FireOnLifeLoss(env)
    if fire:
        env = FireOnReset(env)
    if object_masks or (object_masks is None and mode == "eval" and game in RAM_OBJECTS):
        env = ObjectMasks(env, screen_size, object_margin)
    if mode == "train":
        env = ClipRewardEnv(env)
    env = FrameStackObservation(env, frame_stack, padding_type="reset")
    return ImageDict(env)


_KWARGS = tuple(p for p in inspect.signature(make_atari).parameters if p not in ("game", "mode"))


def _entry(game: str, mode: str, env_id: str):
    def entry(**kwargs) -> gym.Env:
        unknown = sorted(set(kwargs) - set(_KWARGS))
        if unknown:
            hints = {u: difflib.get_close_matches(u, _KWARGS, n=1) for u in unknown}
            hint = "".join(f" Did you mean {h[0]!r} for {u!r}?" for u, h in hints.items() if h)
            fixed = " (game and mode are fixed by the id)" if {"game", "mode"} & set(unknown) else ""
            raise TypeError(
                f"{env_id}: unknown keyword argument(s) {unknown}{fixed}; allowed: {list(_KWARGS)} "
                f"and gym.make's own (max_episode_steps, ...).{hint}"
            )
        return make_atari(game, mode, **kwargs)

    entry.__name__ = entry.__qualname__ = f"make_{game.lower()}_{mode}"
    entry.__doc__ = f"Entry point of {env_id}: :func:`make_atari` with game={game!r}, mode={mode!r}."
    return entry


def atari_frames_to_hwc(image: np.ndarray) -> list[np.ndarray]:
    """Split a stacked observation ``image`` uint8 ``(K, H, W)`` (or one ``(B, K, H, W)`` batch item squeezed) into
    the list of its K grayscale frames, each uint8 ``(H, W)``, oldest first (for plots and videos).

    :raises ValueError: ``image`` is not 3-dimensional.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a (K, H, W) frame stack, got shape {image.shape}")
    return [image[k] for k in range(image.shape[0])]


def _register() -> None:
    for game in ATARI_GAMES:
        for mode in MODES:
            env_id = f"DIGR/{game}-{mode}-v0"
            if env_id not in gym.registry:
                gym.register(env_id, entry_point=_entry(game, mode, env_id), max_episode_steps=MAX_EPISODE_STEPS)


_register()
