"""The one rollout engine: every environment step DIGR takes goes through :func:`run_episodes` (except inside PPO
teacher training, where Stable-Baselines3 steps its own vectorised envs).

Evaluation (clean returns), attacked rollouts, state collection for distillation, DAgger and the latency bench's
frames are all :func:`run_episodes` with different hooks:

* **acting** — an :class:`Actor` maps the batch of images the policy sees to one action per row
  (:class:`GreedyActor`, :class:`SampleActor`, :class:`RandomActor`, or your own);
* **transforming the observation** — ``transform(image, side, generator) -> image`` (an attack from
  :mod:`digr.attacks`) changes what the actor sees; hooks still get the clean observation;
* **recording** — :class:`Hook` objects see every :class:`Step` and every finished :class:`Episode`
  (:class:`Fingerprints` here; dataset states and DAgger labels in :mod:`digr.method.dataset`, action flips in
  :mod:`digr.evaluation.robustness`);
* **per-frame callback** — ``on_frame(step)`` after every step (videos, live viewers).

**Protocol.** Episode ``i`` (counting from 0) resets its env with seed ``seed + i``, so every agent faces the same
layouts. Episodes run in lockstep *waves* of up to ``n_envs`` environments: all episodes of a wave reset together,
each step batches the observations of the wave's running episodes into one ``[n, C, H, W]`` tensor (one forward pass,
and one attack call, for all of them), and the next wave starts when every episode of this one has ended. The
transform's random draws in a wave come from a ``torch.Generator`` seeded with ``seed + `` the wave's first episode
index, so results reproduce exactly for the same ``n_envs`` (and change with it: batch composition is part of the
protocol). ``n_envs=1`` steps one episode at a time. Actions for a ``Box`` action space are clipped into it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch as th

from digr.contracts import Policy, is_gaussian, obs_to_tensors, stack_obs

__all__ = [
    "Act",
    "Actor",
    "Episode",
    "ExpertActor",
    "Fingerprints",
    "GreedyActor",
    "Hook",
    "RandomActor",
    "SampleActor",
    "Step",
    "TrajectoryHash",
    "replay_actions",
    "run_episodes",
]


@dataclass
class Act:
    """What an actor returns for a batch of ``n`` observations.

    :ivar actions: one action per row: an ``int`` (Discrete) or a float array ``[A]`` (Box).
    :ivar output: the policy's output on the image it saw, float ``[n, A]`` (logits or μ), or None (no policy).
    :ivar extras: anything else hooks may want, e.g. ``{"saliency": float [n, H, W]}`` for a live viewer.
    """

    actions: list
    output: th.Tensor | None = None
    extras: dict = field(default_factory=dict)


class Actor(Protocol):
    """Acting hook: ``actor(image float [n,C,H,W] in [0,1], side float [n,K] | None) -> Act``.

    An actor with ``uses_info = True`` is also given ``infos=``, the rows' ``info`` dicts (from the reset or the previous
    step): a privileged expert acts on the env's state, not on pixels (:class:`ExpertActor`).
    """

    def __call__(self, image: th.Tensor, side: th.Tensor | None) -> Act: ...


class ExpertActor:
    """Acts with a privileged expert: ``expert.act(info) -> action`` for each row's ``info`` (e.g.
    ``envs.carracing.PurePursuitExpert`` on ``info["privileged"]``); no policy output. The way an expert drives
    episodes through the engine, to record demonstrations or to label states (DAgger)."""

    uses_info = True

    def __init__(self, expert):
        self.expert = expert

    def __call__(self, image: th.Tensor, side: th.Tensor | None, infos: list[dict]) -> Act:
        return Act([self.expert.act(info) for info in infos])


class GreedyActor:
    """Acts greedily: argmax of the logits (categorical) or the mean μ(s) (Gaussian), one forward pass per batch.

    :param policy: a :class:`digr.contracts.Policy`.
    """

    def __init__(self, policy: Policy):
        self.policy = policy
        self.gaussian = is_gaussian(policy)

    def __call__(self, image: th.Tensor, side: th.Tensor | None) -> Act:
        with th.no_grad():
            out = self.policy(image, side)
        if self.gaussian:
            return Act([row.detach().cpu().numpy().astype(np.float32) for row in out], out)
        return Act([int(out[r : r + 1].argmax(1)) for r in range(len(out))], out)


class SampleActor:
    """Samples each row's action from softmax(logits / temperature) with a seeded ``torch.Generator`` (categorical only).

    :param policy: a categorical :class:`digr.contracts.Policy`. :param temperature: > 0 (1 = the policy's own
        distribution). :param generator: CPU generator; draws happen row by row, in order.
    :raises ValueError: temperature ≤ 0.
    """

    def __init__(self, policy: Policy, temperature: float = 1.0, generator: th.Generator | None = None):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.policy, self.temperature = policy, temperature
        self.generator = generator if generator is not None else th.Generator().manual_seed(0)

    def __call__(self, image: th.Tensor, side: th.Tensor | None) -> Act:
        with th.no_grad():
            out = self.policy(image, side)
        actions = [int(th.multinomial(th.softmax(row / self.temperature, 0), 1, generator=self.generator)) for row in out]
        return Act(actions, out)


class RandomActor:
    """Uniformly random actions from a seeded NumPy generator (Discrete action spaces).

    :param n_actions: number of actions A ≥ 1. :param seed: seed of the generator.
    """

    def __init__(self, n_actions: int, seed: int = 0):
        self.n_actions, self.rng = int(n_actions), np.random.default_rng(seed)

    def __call__(self, image: th.Tensor, side: th.Tensor | None) -> Act:
        return Act([int(self.rng.integers(self.n_actions)) for _ in range(len(image))])


@dataclass
class Step:
    """One lockstep step of the wave's running episodes, as hooks and ``on_frame`` see it (``n`` rows).

    :ivar episodes: episode index of each row. :ivar t: per row, the step's index within its episode (0 = first).
    :ivar obs: each row's clean observation as the env gave it (numpy). :ivar infos: the ``info`` that came with it
        (from the reset or the previous step). :ivar image: clean images, float ``[n,C,H,W]`` in [0, 1].
    :ivar side: float ``[n,K]`` or None. :ivar seen: the images the actor saw (``image`` unless a transform is set).
    :ivar act: the actor's :class:`Act`. :ivar rewards, terminated, truncated, next_infos: what ``env.step`` returned,
        per row.
    """

    episodes: list[int]
    t: list[int]
    obs: list[dict]
    infos: list[dict]
    image: th.Tensor
    side: th.Tensor | None
    seen: th.Tensor
    act: Act
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    next_infos: list[dict] = field(default_factory=list)


@dataclass
class Episode:
    """A finished episode: index ``i``, its env seed (``seed + i``), return (sum of rewards), length in steps, success
    (``float(info["is_success"])`` on the last step, NaN where the env reports none) and the last step's ``info``."""

    index: int
    seed: int
    ret: float
    length: int
    success: float
    final_info: dict


class Hook:
    """Recording hook: override :meth:`on_step` and/or :meth:`on_episode_end` (both do nothing here)."""

    def on_step(self, step: Step) -> None:
        """Called after every lockstep step, once for the whole batch."""

    def on_episode_end(self, episode: Episode) -> None:
        """Called when an episode ends, before the next step."""


class TrajectoryHash:
    """Running fingerprint of the observations of one episode, to count how many *different* games were played.

    ``update(obs)`` adds one observation (a dict of numpy arrays, e.g. ``{"image": uint8 [C, H, W], "side": float [K]}``,
    or an array), keys in sorted order, dtype and shape included; ``hexdigest()`` gives 16 hex characters (BLAKE2b,
    8 bytes). Two episodes get the same id exactly when (up to a 2⁻⁶⁴ collision) they showed the agent the same
    sequence of observations, so a greedy agent replaying one game from equivalent starts (Atari no-op starts) is
    counted once, while different layouts with equal return and length (MiniGrid) are counted apart.
    """

    def __init__(self):
        self._h = hashlib.blake2b(digest_size=8)

    def update(self, obs) -> None:
        items = sorted(obs.items()) if isinstance(obs, dict) else [("", obs)]
        for key, value in items:
            a = np.ascontiguousarray(value)
            self._h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
            self._h.update(a.tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Fingerprints(Hook):
    """Records a :class:`TrajectoryHash` of the clean observations of every episode: ``ids[i]`` (16 hex characters)."""

    def __init__(self):
        self._running: dict[int, TrajectoryHash] = {}
        self.ids: dict[int, str] = {}

    def on_step(self, step: Step) -> None:
        for i, obs in zip(step.episodes, step.obs):
            self._running.setdefault(i, TrajectoryHash()).update(obs)

    def on_episode_end(self, episode: Episode) -> None:
        self.ids[episode.index] = self._running.pop(episode.index).hexdigest()


def _env_action(action: Any, space: gym.Space):
    if isinstance(space, gym.spaces.Box):
        return np.clip(np.asarray(action, np.float32), space.low, space.high)
    return action


def run_episodes(
    env_fn: Callable[[], gym.Env],
    actor: Actor,
    *,
    episodes: int | None,
    seed: int = 0,
    n_envs: int = 1,
    transform: Callable[[th.Tensor, th.Tensor | None, th.Generator], th.Tensor] | None = None,
    hooks: Sequence[Hook] = (),
    on_frame: Callable[[Step], None] | None = None,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    device: str | th.device = "cpu",
) -> list[Episode]:
    """Run episodes ``0 .. episodes-1`` (seeds ``seed + i``) in lockstep waves of ``n_envs`` (see the module docstring).

    :param env_fn: builds one contract env (:func:`digr.contracts.make_env`); called ``min(episodes, n_envs)`` times.
    :param actor: the acting hook (:class:`Actor`).
    :param episodes: number of episodes ≥ 1, or None to run until ``stop`` says so (or forever, e.g. a live viewer
        stopped with Ctrl-C).
    :param seed: seed of episode 0. :param n_envs: environments stepped together (≥ 1).
    :param transform: ``transform(image, side, generator) -> image`` applied to what the actor sees (an attack);
        ``generator`` is seeded per wave. Hooks still see the clean image.
    :param hooks: recording hooks. :param on_frame: called with every :class:`Step`, after the hooks.
    :param stop: checked after every step; when it returns True the run ends at once and episodes still running are
        dropped (not returned, no ``on_episode_end``).
    :param progress: called with the number of finished episodes. :param device: where observations go.
    :returns: the finished episodes, sorted by index.
    :raises ValueError: ``episodes`` < 1 or ``n_envs`` < 1.

    Example — ten greedy episodes, fingerprinted, with a per-frame callback (a live viewer would draw here)::

        fp = Fingerprints()
        done = run_episodes(env_fn, GreedyActor(policy), episodes=10, seed=100, hooks=[fp],
                            on_frame=lambda step: print(step.episodes, step.act.actions))
        returns = [e.ret for e in done]; distinct_games = len(set(fp.ids.values()))
    """
    if (episodes is not None and episodes < 1) or n_envs < 1:
        raise ValueError(f"episodes={episodes} and n_envs={n_envs} must be ≥ 1 (episodes may be None with a stop condition)")
    envs = [env_fn() for _ in range(n_envs if episodes is None else min(episodes, n_envs))]
    total = math.inf if episodes is None else episodes
    results: list[Episode] = []
    try:
        first = 0
        while first < total:
            wave = list(range(first, int(min(total, first + len(envs)))))
            generator = th.Generator().manual_seed(seed + first) if transform is not None else None
            if _run_wave(
                dict(zip(wave, envs)), seed, actor, transform, generator, hooks, on_frame, stop, progress, device, results
            ):
                break
            first += len(wave)
    finally:
        for env in envs:
            env.close()
    return sorted(results, key=lambda e: e.index)


def _run_wave(env_of: dict, seed, actor, transform, generator, hooks, on_frame, stop, progress, device, results) -> bool:
    """Run the episodes ``env_of`` maps to their envs until all end (appending to ``results``); True if ``stop`` fired."""
    obs, info = {}, {}
    for i, env in env_of.items():
        obs[i], info[i] = env.reset(seed=seed + i)
    ret, length = dict.fromkeys(env_of, 0.0), dict.fromkeys(env_of, 0)
    running = list(env_of)
    while running:
        image, side = obs_to_tensors(stack_obs([obs[i] for i in running]), device)
        seen = image if transform is None else transform(image, side, generator)
        if getattr(actor, "uses_info", False):
            act = actor(seen, side, infos=[info[i] for i in running])
        else:
            act = actor(seen, side)
        step = Step(running, [length[i] for i in running], [obs[i] for i in running], [info[i] for i in running], image, side,
                    seen, act)  # fmt: skip
        ended = []
        for row, i in enumerate(running):
            env = env_of[i]
            obs[i], reward, terminated, truncated, info[i] = env.step(_env_action(act.actions[row], env.action_space))
            step.rewards.append(float(reward))
            step.terminated.append(terminated)
            step.truncated.append(truncated)
            step.next_infos.append(info[i])
            ret[i] += float(reward)
            length[i] += 1
            if terminated or truncated:
                success = float(info[i]["is_success"]) if "is_success" in info[i] else float("nan")
                ended.append(Episode(i, seed + i, ret[i], length[i], success, info[i]))
        for hook in hooks:
            hook.on_step(step)
        if on_frame is not None:
            on_frame(step)
        for episode in ended:
            results.append(episode)
            for hook in hooks:
                hook.on_episode_end(episode)
            if progress is not None:
                progress(len(results))
        if stop is not None and stop():
            return True
        running = [i for i in running if i not in {e.index for e in ended}]
    return False


def replay_actions(venv, actions: np.ndarray, progress: Callable[[int, int], None] | None = None):
    """Step a freshly reset vector env (SB3 ``VecEnv``: auto-reset, ``step(actions) -> obs, rewards, dones, infos``)
    through recorded actions, which brings every env, its wrappers and its RNG back to the state they had (exact for
    envs that are deterministic given their seed and actions). Used to resume a teacher (:mod:`digr.policies.ppo`).

    :param actions: ``[T, n_envs]`` (Discrete) or ``[T, n_envs, ...]`` (Box), the actions of T vector steps.
    :param progress: called with ``(steps done, T)`` every 1000 steps and at the end.
    :returns: ``(obs, dones)`` after the last step (``dones`` bool ``[n_envs]``), or ``(None, None)`` when T = 0.
    """
    obs = dones = None
    for k, row in enumerate(actions):
        obs, _, dones, _ = venv.step(row)
        if progress and ((k + 1) % 1000 == 0 or k + 1 == len(actions)):
            progress(k + 1, len(actions))
    return obs, dones
