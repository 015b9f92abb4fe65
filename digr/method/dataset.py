"""States for distillation and evaluation, collected by the rollout engine and labelled by the teacher.

The teacher acts by sampling from softmax(logits / temperature) (temperature 1 = its own stochastic policy), which
visits more states than its greedy path; for DAgger another actor (the student) acts and the teacher only labels.
Each record keeps the image (uint8), side input, the teacher's logits and the ground-truth target mask from
``info["target_mask"]`` (all-False where the env gives none). Training and held-out states come from disjoint episode
seeds (:func:`split_seed`). Saved with ``numpy.savez_compressed``; loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

from digr.checkpoint import save_npz_atomic
from digr.contracts import Policy, policy_device
from digr.errors import CheckpointError
from digr.rollout import Episode, GreedyActor, Hook, SampleActor, Step, run_episodes
from digr.saliency import PerturbationSaliency

__all__ = [
    "SPLITS",
    "StateDataset",
    "StateRecorder",
    "collect_states",
    "load_dataset",
    "load_maps",
    "perturbation_maps",
    "save_dataset",
    "split_seed",
]

#: Dataset splits of a run: training states and held-out states (other episodes) for evaluation.
SPLITS = ("train", "heldout")


def split_seed(seed: int, split: str) -> int:
    """Seed of the first episode of ``split`` for a run seeded ``seed``: far apart, so the splits share no episode.

    :raises ValueError: unknown split.
    """
    offsets = {"train": 1, "heldout": 500_001}
    if split not in offsets:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return seed * 1_000_003 + offsets[split]


@dataclass
class StateDataset:
    """images uint8 ``[N, C, H, W]``; side float32 ``[N, K]`` or None; teacher_logits float32 ``[N, A]``;
    target_mask bool ``[N, H, W]``; episode int64 ``[N]`` (episode seed of each state); regions: name → bool
    ``[N, H, W]``, the env's ``info["region_masks"]`` (more ground-truth regions; empty where the env gives none)."""

    images: np.ndarray
    teacher_logits: np.ndarray
    target_mask: np.ndarray
    episode: np.ndarray
    side: np.ndarray | None = None
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def side_dim(self) -> int:
        """Length K of the side input (0 without one)."""
        return 0 if self.side is None else self.side.shape[1]

    def subset(self, idx: np.ndarray) -> StateDataset:
        """Rows ``idx`` as a new dataset."""
        return StateDataset(
            self.images[idx],
            self.teacher_logits[idx],
            self.target_mask[idx],
            self.episode[idx],
            None if self.side is None else self.side[idx],
            {k: v[idx] for k, v in self.regions.items()},
        )

    def tensors(self, idx=slice(None), device: str | th.device = "cpu") -> tuple[th.Tensor, th.Tensor | None]:
        """Rows ``idx`` as policy inputs: ``(image float32 [n, C, H, W] in [0, 1], side float32 [n, K] or None)``."""
        image = th.as_tensor(self.images[idx], device=device).float() / 255.0
        return image, None if self.side is None else th.as_tensor(self.side[idx], device=device)


def perturbation_maps(
    teacher: Policy,
    ds: StateDataset,
    p,
    device: str | th.device = "cpu",
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The teacher's perturbation saliency map (Greydanus et al. 2018, :class:`digr.saliency.PerturbationSaliency`) of
    every state, float32 ``[N, H, W]`` ≥ 0: the reference for agreement metrics and the source of selective masks.

    :param p: the perturbation config section (``sigma_mask``, ``sigma_blur``, ``stride`` in pixels,
        ``internal_batch_size``). :param chunk: states per call. :param progress: called with the states done so far.
    """
    method = PerturbationSaliency.from_params(p)
    maps = np.zeros((len(ds), *ds.images.shape[2:]), np.float32)
    for i in range(0, len(ds), chunk):
        image, side = ds.tensors(slice(i, i + chunk), device)
        maps[i : i + chunk] = method(teacher, image, None, side).cpu().numpy()
        if progress is not None:
            progress(min(len(ds), i + chunk))
    return maps


class StateRecorder(Hook):
    """Recording hook of :func:`collect_states`: keeps each episode's states labelled with the teacher's logits and,
    when the episode ends, at most ``max_per_episode`` of them (drawn uniformly without replacement from a NumPy
    generator seeded ``seed``), until ``n_states`` are kept.

    :param teacher: labels states; None = use the actor's own output (the actor is the teacher).
    """

    def __init__(self, n_states: int, seed: int, max_per_episode: int | None, teacher: Policy | None = None):
        self.n_states, self.max_per_episode, self.teacher = n_states, max_per_episode, teacher
        self.rng = np.random.default_rng(seed)
        self._episode: dict[int, list[tuple]] = {}
        self.images, self.sides, self.logits, self.masks, self.episodes, self.regions = [], [], [], [], [], []

    @property
    def full(self) -> bool:
        return len(self.images) >= self.n_states

    def on_step(self, step: Step) -> None:
        if self.teacher is None:
            labels = step.act.output
        else:
            with th.no_grad():
                labels = self.teacher(step.image, step.side)
        for row, (i, obs, info) in enumerate(zip(step.episodes, step.obs, step.infos)):
            mask = info.get("target_mask", np.zeros(obs["image"].shape[1:], bool))
            rec = (obs["image"], obs.get("side"), labels[row].cpu().numpy(), mask, info.get("region_masks", {}))
            self._episode.setdefault(i, []).append(rec)

    def on_episode_end(self, episode: Episode) -> None:
        rec = self._episode.pop(episode.index)
        keep = np.arange(len(rec))
        if self.max_per_episode is not None and len(rec) > self.max_per_episode:
            keep = np.sort(self.rng.choice(len(rec), self.max_per_episode, replace=False))
        for k in keep[: self.n_states - len(self.images)]:
            image, side, logits, mask, regions = rec[k]
            self.images.append(image)
            if side is not None:
                self.sides.append(side)
            self.logits.append(logits)
            self.masks.append(mask)
            self.regions.append(regions)
            self.episodes.append(episode.seed)

    def dataset(self) -> StateDataset:
        """The kept states as a :class:`StateDataset`."""
        return StateDataset(
            np.stack(self.images),
            np.stack(self.logits).astype(np.float32),
            np.stack(self.masks).astype(bool),
            np.asarray(self.episodes, np.int64),
            np.stack(self.sides).astype(np.float32) if self.sides else None,
            {k: np.stack([r[k] for r in self.regions]).astype(bool) for k in self.regions[0]} if self.regions else {},
        )


def collect_states(
    env_fn: Callable[[], gym.Env],
    teacher: Policy,
    n_states: int,
    seed: int,
    temperature: float = 1.0,
    progress: Callable[[int], None] | None = None,
    max_per_episode: int | None = None,
    actor: Policy | None = None,
) -> StateDataset:
    """Roll out the teacher (sampling at ``temperature``) from episode seeds ``seed, seed+1, …`` until ``n_states`` states.

    With ``actor`` (DAgger), the actor chooses the actions greedily (argmax of its logits) and the teacher only labels
    the visited states with its logits. With ``max_per_episode`` each episode contributes at most that many states,
    drawn uniformly without replacement from the whole episode (seeded), so a dataset covers more layouts and fewer
    near-repeats of one looping episode. Episodes run one at a time through :func:`digr.rollout.run_episodes`.

    :param progress: called with the number of states kept so far, after each episode.
    :returns: a :class:`StateDataset` of exactly ``n_states`` rows.
    :raises ValueError: ``n_states`` < 1, ``temperature`` ≤ 0 or ``max_per_episode`` < 1.
    """
    if n_states < 1 or temperature <= 0:
        raise ValueError(f"need n_states >= 1 and temperature > 0, got {n_states}, {temperature}")
    if max_per_episode is not None and max_per_episode < 1:
        raise ValueError(f"max_per_episode must be >= 1 or None, got {max_per_episode}")
    recorder = StateRecorder(n_states, seed, max_per_episode, teacher=None if actor is None else teacher)
    act = SampleActor(teacher, temperature, th.Generator().manual_seed(seed)) if actor is None else GreedyActor(actor)
    run_episodes(
        env_fn,
        act,
        episodes=None,
        seed=seed,
        hooks=[recorder],
        stop=lambda: recorder.full,
        progress=None if progress is None else lambda _: progress(len(recorder.images)),
        device=policy_device(teacher),
    )
    return recorder.dataset()


def save_dataset(ds: StateDataset, path: str | Path) -> None:
    """Write ``ds`` with ``numpy.savez_compressed`` atomically (:func:`digr.checkpoint.save_npz_atomic`).

    :raises DiskFullError, NotWritableError: the file could not be written (its previous version is kept)."""
    arrays = {"images": ds.images, "teacher_logits": ds.teacher_logits, "target_mask": ds.target_mask, "episode": ds.episode}
    if ds.side is not None:
        arrays["side"] = ds.side
    arrays |= {f"region_{k}": v for k, v in ds.regions.items()}
    save_npz_atomic(arrays, path)


def load_dataset(path: str | Path) -> StateDataset:
    """Read a dataset written by :func:`save_dataset` (no pickle).

    :raises FileNotFoundError: missing file (run the stage that writes it).
    :raises CheckpointError: a corrupt or incomplete file (delete it and rerun that stage).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} not found; run `digr run` (stage 'dataset') first")
    try:
        with np.load(path, allow_pickle=False) as z:
            regions = {k.removeprefix("region_"): z[k] for k in z.files if k.startswith("region_")}
            return StateDataset(z["images"], z["teacher_logits"], z["target_mask"], z["episode"], z.get("side", None), regions)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"dataset {path} is corrupt or incomplete ({type(e).__name__}: {e}); delete it and rerun `digr run` with the same "
            "config: its stage is redone"
        ) from e


def load_maps(path: str | Path) -> np.ndarray:
    """Read saliency maps saved with ``numpy.save`` (float32 ``[N, H, W]``), without pickle.

    :raises FileNotFoundError: missing file (run the stage that computes the teacher's maps, ``saliency``).
    :raises CheckpointError: a corrupt file (delete it and rerun that stage).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"saliency maps {path} not found; run `digr distill` or `digr run` (stage 'saliency') first")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CheckpointError(
            f"saliency maps {path} are corrupt ({type(e).__name__}: {e}); delete it and rerun `digr run` with the same "
            "config: its stage is redone"
        ) from e
