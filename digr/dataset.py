"""States for distillation and evaluation, collected from teacher rollouts.

The teacher acts by sampling from softmax(logits / temperature) (temperature 1 = its own stochastic policy), which
visits more states than its greedy path. Each record keeps the image (uint8), side input, the teacher's logits and
the ground-truth target mask from ``info["target_mask"]`` (all-False where the env gives none). Training and held-out
states come from disjoint episode seeds. Saved with ``numpy.savez_compressed``; loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from digr.policies import obs_to_tensors

__all__ = ["StateDataset", "collect_states", "save_dataset", "load_dataset"]


@dataclass
class StateDataset:
    """images uint8 ``[N, C, H, W]``; side float32 ``[N, K]`` or None; teacher_logits float32 ``[N, A]``;
    target_mask bool ``[N, H, W]``; episode int64 ``[N]`` (episode seed of each state)."""

    images: np.ndarray
    teacher_logits: np.ndarray
    target_mask: np.ndarray
    episode: np.ndarray
    side: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> StateDataset:
        """Rows ``idx`` as a new dataset."""
        return StateDataset(self.images[idx], self.teacher_logits[idx], self.target_mask[idx], self.episode[idx],
                            None if self.side is None else self.side[idx])


def collect_states(env_fn: Callable[[], gym.Env], teacher: nn.Module, n_states: int, seed: int, temperature: float = 1.0,
                   progress: Callable[[int], None] | None = None, max_per_episode: int | None = None,
                   actor: nn.Module | None = None) -> StateDataset:
    """Roll out the teacher (sampling at ``temperature``) from episode seeds ``seed, seed+1, …`` until ``n_states`` states.

    With ``actor`` (DAgger), the actor chooses the actions greedily (argmax of its logits) and the teacher only labels
    the visited states with its logits. With ``max_per_episode`` each episode contributes at most that many states, drawn uniformly without replacement
    from the whole episode (seeded), so a dataset covers more layouts and fewer near-repeats of one looping episode.

    :raises ValueError: ``n_states`` < 1, ``temperature`` ≤ 0 or ``max_per_episode`` < 1.
    """
    if n_states < 1 or temperature <= 0:
        raise ValueError(f"need n_states >= 1 and temperature > 0, got {n_states}, {temperature}")
    if max_per_episode is not None and max_per_episode < 1:
        raise ValueError(f"max_per_episode must be >= 1 or None, got {max_per_episode}")
    env = env_fn()
    gen = th.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, sides, logits, masks, episodes = [], [], [], [], []
    ep = seed
    while len(images) < n_states:
        obs, info = env.reset(seed=ep)
        done = False
        rec: list[tuple] = []
        while not done:
            image, side = obs_to_tensors(obs)
            with th.no_grad():
                lg = teacher(image, side)[0]
                act_logits = None if actor is None else actor(image, side)[0]
            rec.append((obs["image"], obs.get("side"), lg.numpy(), info.get("target_mask", np.zeros(obs["image"].shape[1:], bool))))
            if act_logits is not None:
                action = int(act_logits.argmax())
            else:
                action = int(th.multinomial(th.softmax(lg / temperature, 0), 1, generator=gen))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        keep = np.arange(len(rec))
        if max_per_episode is not None and len(rec) > max_per_episode:
            keep = np.sort(rng.choice(len(rec), max_per_episode, replace=False))
        for k in keep[: n_states - len(images)]:
            img, sd, lg, m = rec[k]
            images.append(img)
            if sd is not None:
                sides.append(sd)
            logits.append(lg)
            masks.append(m)
            episodes.append(ep)
        if progress:
            progress(len(images))
        ep += 1
    env.close()
    return StateDataset(np.stack(images), np.stack(logits).astype(np.float32), np.stack(masks).astype(bool),
                        np.asarray(episodes, np.int64), np.stack(sides).astype(np.float32) if sides else None)


def save_dataset(ds: StateDataset, path: str | Path) -> None:
    """Write ``ds`` with ``numpy.savez_compressed`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {"images": ds.images, "teacher_logits": ds.teacher_logits, "target_mask": ds.target_mask, "episode": ds.episode}
    if ds.side is not None:
        arrays["side"] = ds.side
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_dataset(path: str | Path) -> StateDataset:
    """Read a dataset written by :func:`save_dataset` (no pickle).

    :raises FileNotFoundError: missing file. :raises ValueError: corrupt or incomplete file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} not found; run `digr run` (stage 'dataset') first")
    try:
        with np.load(path, allow_pickle=False) as z:
            return StateDataset(z["images"], z["teacher_logits"], z["target_mask"], z["episode"], z["side"] if "side" in z else None)
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"dataset {path} is corrupt or incomplete ({e}); delete it to recollect") from e
