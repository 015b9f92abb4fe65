"""Imitation teachers: behaviour cloning plus DAgger from a privileged expert, resumable.

A pixel policy learns to act like an expert that sees the simulator's state instead of pixels (the
Learning-by-Cheating pattern, Chen et al. 2019, arXiv 1912.12294; Roach, Zhang et al. 2021). Round 0 is behaviour
cloning: the expert drives and labels every state. Rounds ``1 .. dagger_rounds`` are DAgger (Ross, Gordon & Bagnell
2011, "A Reduction of Imitation Learning and Structured Prediction to No-Regret Online Learning", Algorithm 3.1): the
mixture policy ``π_r = β_r·expert + (1 − β_r)·learner`` (``β_r = beta^r``, drawn per step) drives, the expert labels the
states it visits, the new states join the aggregate dataset and the learner is trained further on all of it. The
learner minimises the cross-entropy between its action distribution and the expert's action, with label smoothing
(Szegedy et al. 2016) so that the teacher's distribution — which students are distilled from (KL) and whose
perturbation map is taken (½‖Δ log π‖²) — keeps a finite, informative spread instead of collapsing to one-hot.

The learner is the same SB3 ``MultiInputActorCriticPolicy`` as a PPO teacher (Nature CNN, ``arch: nature``), saved as
a :class:`digr.policies.teacher.TeacherFolder` (``teacher.safetensors`` + ``teacher.json``), so every later stage
(states, perturbation maps, students, evaluation, attacks, ``digr drive``) uses it exactly like a PPO teacher. Its
critic head is not trained (nothing of DIGR reads an imitation teacher's value).

The expert is any object with ``act(info) -> action`` (e.g. ``envs.carracing.PurePursuitExpert``), named in the
config as ``module:Class``; it drives through the rollout engine (:func:`digr.rollout.run_episodes`) with
``uses_info`` actors, so core code never imports an env.

Resume. Each round's labelled states are stored (``checkpoint/round_<r>.npz``) and, after the round's training, one
checkpoint file (``checkpoint/state.pt``) holds the learner, the optimiser, the finished round, the history and the
config. A stopped run (``max_minutes``, a kill) resumes at the next round; a round's rollouts and minibatch order are
seeded by the run seed and the round number, so a resumed teacher equals an uninterrupted one.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import MultiInputActorCriticPolicy

from digr.checkpoint import load_training_state, save_module, save_npz_atomic, save_training_state, write_text_atomic
from digr.contracts import weights_finite
from digr.errors import CheckpointError, ConfigError, NonFiniteError
from digr.policies.teacher import SB3Teacher, sb3_policy_kwargs, spaces_from, teacher_spec
from digr.policies.teacher_folder import TeacherFolder
from digr.rollout import Act, Episode, Hook, Step, run_episodes

__all__ = ["CHECKPOINT_KEYS", "DAggerActor", "ExpertLabels", "fit_actions", "imitation_seed", "load_expert", "train_imitation"]

#: What an imitation checkpoint holds (a file without one of these is refused, not half-used).
CHECKPOINT_KEYS = ("policy", "optim", "round", "history", "wall_s", "config")


def load_expert(ref: str, kwargs: dict | None = None):
    """Build the expert named ``module:Class`` (``teacher.expert``) with ``kwargs`` (``teacher.expert_kwargs``).

    :returns: an object with ``act(info: dict) -> action``.
    :raises ConfigError: a malformed reference, a module or class that does not exist, bad keyword arguments, or an
        object without ``act``.
    """
    module_name, _, name = ref.partition(":")
    if not module_name or not name:
        raise ConfigError(f"teacher.expert: {ref!r} is not 'module:Class' (e.g. 'envs.carracing:PurePursuitExpert')")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"teacher.expert: cannot import {ref!r} ({e}); name an importable 'module:Class'") from e
    try:
        expert = cls(**(kwargs or {}))
    except TypeError as e:
        raise ConfigError(f"teacher.expert_kwargs: {ref} does not take {sorted(kwargs or {})} ({e})") from e
    if not callable(getattr(expert, "act", None)):
        raise ConfigError(f"teacher.expert: {ref} has no act(info) method; an expert maps an info dict to an action")
    return expert


def imitation_seed(seed: int, round_: int) -> int:
    """Seed of the first episode of imitation round ``round_`` ≥ 0 of a run seeded ``seed``: apart from the dataset
    splits (:func:`digr.method.dataset.split_seed`), the students' DAgger rounds (:func:`digr.method.dagger.dagger_seed`)
    and the evaluation seeds (``evaluate.seed`` = 100,000 by default), so the teacher never trains on a test track."""
    return seed * 1_000_003 + 300_001 + 10_000 * round_


class DAggerActor:
    """The acting hook of an imitation round: each row takes the expert's action with probability ``beta`` and the
    learner's greedy action otherwise (``learner=None`` or ``beta=1``: the expert drives). The expert's actions are
    handed to hooks as ``Act.extras["expert"]`` (list of ints), which are the labels.

    :param expert: ``act(info) -> int``. :param learner: a categorical :class:`digr.contracts.Policy` or None.
    :param beta: in [0, 1]. :param generator: CPU generator for the per-row draws.
    """

    uses_info = True

    def __init__(self, expert, learner=None, beta: float = 1.0, generator: th.Generator | None = None):
        self.expert, self.learner, self.beta = expert, learner, beta
        self.generator = generator or th.Generator().manual_seed(0)

    def __call__(self, image: th.Tensor, side: th.Tensor | None, infos: list[dict]) -> Act:
        labels = [int(self.expert.act(info)) for info in infos]
        if self.learner is None or self.beta >= 1.0:
            return Act(list(labels), extras={"expert": labels})
        with th.no_grad():
            out = self.learner(image, side)
        draws = th.rand(len(labels), generator=self.generator).tolist()
        actions = [lab if u < self.beta else int(out[r].argmax()) for r, (lab, u) in enumerate(zip(labels, draws))]
        return Act(actions, out, {"expert": labels})


class ExpertLabels(Hook):
    """Recording hook of an imitation round: every visited state's uint8 image ``[C,H,W]`` (and side input) with the
    expert's action from ``Act.extras["expert"]``, and each finished episode's return (of the mixture that drove)."""

    def __init__(self):
        self.images, self.sides, self.labels, self.returns = [], [], [], []

    def on_step(self, step: Step) -> None:
        for obs, label in zip(step.obs, step.act.extras["expert"]):
            self.images.append(obs["image"])
            if obs.get("side") is not None:
                self.sides.append(obs["side"])
            self.labels.append(label)

    def on_episode_end(self, episode: Episode) -> None:
        self.returns.append(episode.ret)

    def arrays(self) -> dict[str, np.ndarray]:
        """``{"images": uint8 [N,C,H,W], "labels": int64 [N], "returns": float64 [episodes][, "sides": float32 [N,K]]}``."""
        out = {"images": np.stack(self.images), "labels": np.asarray(self.labels, np.int64)}
        out["returns"] = np.asarray(self.returns, np.float64)
        if self.sides:
            out["sides"] = np.stack(self.sides).astype(np.float32)
        return out


def fit_actions(
    policy: SB3Teacher,
    optim: th.optim.Optimizer,
    data: dict[str, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    label_smoothing: float,
    generator: th.Generator,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Minimise the cross-entropy between ``policy``'s action distribution and the expert's actions over ``epochs``
    passes of shuffled minibatches (behaviour cloning; DAgger's supervised step).

    :param policy: the learner; ``policy(image float [B,C,H,W] in [0,1], side) -> log π float [B, A]``.
    :param data: ``images`` uint8 ``[N,C,H,W]``, ``labels`` int64 ``[N]`` in ``[0, A)`` (optional ``sides``).
    :param label_smoothing: in [0, 1): the target puts ``1 − s + s/A`` on the expert's action, ``s/A`` elsewhere.
    :param generator: CPU generator for the minibatch order. :param progress: ``(batches done, total)``.
    :returns: ``{"loss": mean cross-entropy of the last epoch (nats), "accuracy": argmax agreement in the last epoch}``.
    :raises NonFiniteError: the loss or the weights became NaN or infinite.
    """
    n = len(data["labels"])
    per_epoch = -(-n // batch_size)
    done, loss_sum, hits = 0, 0.0, 0
    for epoch in range(epochs):
        order = th.randperm(n, generator=generator).numpy()
        loss_sum, hits = 0.0, 0
        for k in range(per_epoch):
            idx = np.sort(order[k * batch_size : (k + 1) * batch_size])
            image = th.as_tensor(data["images"][idx], device=device).float().div_(255.0)
            side = th.as_tensor(data["sides"][idx], device=device) if "sides" in data else None
            y = th.as_tensor(data["labels"][idx], device=device)
            log_pi = policy(image, side)
            loss = F.cross_entropy(log_pi, y, label_smoothing=label_smoothing)
            if not th.isfinite(loss):
                raise NonFiniteError(
                    f"imitation: non-finite loss in epoch {epoch}; lower teacher.imitation.learning_rate and rerun"
                )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            loss_sum += float(loss.detach()) * len(idx)
            hits += int((log_pi.argmax(1) == y).sum())
            done += 1
            if progress is not None:
                progress(done, epochs * per_epoch)
    if not weights_finite(policy):
        raise NonFiniteError("imitation: the learner's weights became non-finite; lower teacher.imitation.learning_rate")
    return {"loss": loss_sum / n, "accuracy": hits / n}


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = [k for k in ("images", "labels", "sides") if k in parts[0]]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _load_round(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"imitation round data {path} is corrupt ({e}); delete it and rerun to collect it again") from e


def _round_data(env_fn, expert, learner, cfg, path: Path, r: int, seed: int, device, log, progress, label: str) -> dict:
    """Round ``r``'s expert-labelled states: read from ``path`` if stored, else collected (round 0: the expert drives;
    later rounds: the β^r mixture) and stored there."""
    if path.is_file():
        return _load_round(path)
    im = cfg.imitation
    episodes = im.bc_episodes if r == 0 else im.dagger_episodes
    actor = DAggerActor(expert, learner if r else None, im.beta**r, th.Generator().manual_seed(imitation_seed(seed, r)))
    rec, t0 = ExpertLabels(), time.perf_counter()
    tick = None if progress is None else lambda k: progress(k, episodes, f"teacher: {label}: episodes")
    learner.eval()
    run_episodes(env_fn, actor, episodes=episodes, seed=imitation_seed(seed, r), hooks=[rec], progress=tick, device=device)
    data = rec.arrays()
    save_npz_atomic(data, path)
    log(f"teacher: {label}: {len(rec.labels)} states from {episodes} episodes in {time.perf_counter() - t0:.0f} s, "
        f"return {np.mean(rec.returns):.1f} ± {np.std(rec.returns):.1f}")  # fmt: skip
    return data


def train_imitation(
    env_fn: Callable[[], gym.Env],
    cfg,
    out: TeacherFolder,
    seed: int = 0,
    device: str = "cpu",
    max_minutes: float | None = None,
    config: dict | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path | None:
    """Train (or resume training) a pixel teacher by behaviour cloning and DAgger from ``cfg.expert`` (module docstring).

    :param env_fn: makes one contract env whose ``info`` the expert reads (e.g. ``info["privileged"]``).
    :param cfg: the teacher config section (:class:`digr.running.config.TeacherConfig`: ``expert``, ``expert_kwargs``,
        architecture, and ``imitation``: ``bc_episodes``, ``dagger_rounds``, ``dagger_episodes``, ``beta``,
        ``epochs``, ``batch_size``, ``learning_rate``, ``label_smoothing``).
    :param out: the teacher folder to write (weights, spec, ``imitation.json`` history, checkpoint).
    :param max_minutes: wall-clock budget of this call; checked after each round (returns None; call again to resume).
    :param config: the config the teacher depends on, stored in the checkpoint.
    :param log: one line per round. :param progress: ``(done, total, label)`` within a round.
    :returns: path of ``teacher.safetensors``, or None when stopped by ``max_minutes`` before the last round.
    :raises ConfigError: a bad expert. :raises CheckpointError: a corrupt checkpoint or round file.
    :raises NonFiniteError: the loss or the weights became non-finite.
    """
    im, expert = cfg.imitation, load_expert(cfg.expert, cfg.expert_kwargs)
    spec = {**teacher_spec(cfg, env_fn, "imitation"), "expert": cfg.expert, "expert_kwargs": cfg.expert_kwargs}
    th.manual_seed(seed)
    obs_space, act_space = spaces_from(spec["spaces"])
    kwargs = sb3_policy_kwargs(cfg.arch, cfg.cell, cfg.features_dim, cfg.channels)
    sb3 = MultiInputActorCriticPolicy(obs_space, act_space, lr_schedule=lambda _: im.learning_rate, **kwargs).to(device)
    learner = SB3Teacher(sb3)
    optim = th.optim.Adam(sb3.parameters(), lr=im.learning_rate)
    out.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    history, start, wall0, t_call = [], 0, 0.0, time.perf_counter()
    if out.checkpoint_state.is_file():
        state = load_training_state(out.checkpoint_state, CHECKPOINT_KEYS)
        try:
            sb3.load_state_dict(state["policy"])
            optim.load_state_dict(state["optim"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"teacher checkpoint {out.checkpoint_state} does not fit this teacher ({e}); delete it"
            ) from e
        start, history, wall0 = int(state["round"]) + 1, json.loads(state["history"]), float(state["wall_s"])
        log(f"teacher: resuming imitation after round {start - 1} ({out.checkpoint_state})")
    parts = [_load_round(out.checkpoint_dir / f"round_{r}.npz") for r in range(start)]
    for r in range(start, im.dagger_rounds + 1):
        beta, label = im.beta**r, "BC (expert drives)" if r == 0 else f"DAgger {r} (β={im.beta**r:.3g})"
        parts.append(_round_data(env_fn, expert, learner, cfg, out.checkpoint_dir / f"round_{r}.npz", r, seed, device,
                                 log, progress, label))  # fmt: skip
        data, t0 = _merge(parts), time.perf_counter()
        tick = None if progress is None else lambda k, n, lab=label: progress(k, n, f"teacher: {lab}: training")
        kw = {"epochs": im.epochs, "batch_size": im.batch_size, "label_smoothing": im.label_smoothing, "device": device}
        fit = fit_actions(learner, optim, data, generator=th.Generator().manual_seed(imitation_seed(seed, r)), progress=tick,
                          **kw)  # fmt: skip
        returns = parts[-1]["returns"]
        row = {"round": r, "beta": beta, "episodes": len(returns), "states": len(data["labels"]), **fit}
        row |= {"rollout_return_mean": float(np.mean(returns)), "rollout_return_std": float(np.std(returns))}
        history.append(row)
        log(f"teacher: {label}: trained on {row['states']} states, loss {fit['loss']:.3f}, "
            f"agreement with the expert {fit['accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        wall = wall0 + time.perf_counter() - t_call
        state = {"policy": sb3.state_dict(), "optim": optim.state_dict(), "round": r, "history": json.dumps(history)}
        state |= {"wall_s": wall, "config": json.dumps(config or {}, sort_keys=True)}
        save_training_state(state, out.checkpoint_state)
        if max_minutes is not None and r < im.dagger_rounds and time.perf_counter() - t_call > 60.0 * max_minutes:
            return None
    save_module(sb3, out.weights)
    spec["num_timesteps"] = int(sum(len(p["labels"]) for p in parts))  # expert-labelled states
    spec["train_wall_s"] = round(wall0 + time.perf_counter() - t_call, 1)
    write_text_atomic(out.spec, json.dumps(spec, indent=2))
    write_text_atomic(out.imitation, json.dumps(history, indent=2))
    return out.weights
