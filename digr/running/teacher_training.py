"""The teacher stage's training step: PPO or imitation, chosen by ``teacher.kind``, with progress on the console."""

from __future__ import annotations

import functools

from digr.policies.imitation import train_imitation
from digr.policies.ppo import train_teacher
from digr.running import outputs
from digr.running.console import log, progress

__all__ = ["train_configured_teacher"]


def train_configured_teacher(cfg, out, env_fn, eval_env_fn, device: str, tracker, config: dict,
                             max_minutes: float | None) -> bool:  # fmt: skip
    """Train (or resume) the run's teacher into ``out`` as ``cfg.teacher.kind`` says: SB3 PPO on the training env
    (:func:`digr.policies.ppo.train_teacher`), or behaviour cloning + DAgger from ``teacher.expert`` on the evaluation
    env, whose episodes are the ones the teacher will be judged on (:func:`digr.policies.imitation.train_imitation`).

    :param cfg: the experiment config. :param out: the run's :class:`digr.policies.TeacherFolder`.
    :param env_fn: makes a training env. :param eval_env_fn: makes an evaluation env.
    :param tracker: experiment tracking (PPO learning-curve rows). :param config: what the teacher depends on (stored in
        its checkpoints). :param max_minutes: wall-time budget of this call.
    :returns: True when finished, False when stopped by ``max_minutes`` (rerun to resume).
    :raises CheckpointError, ConfigError, NonFiniteError: from the trainers.
    """
    t = cfg.teacher
    if t.kind == "imitation":
        log(f"teacher: imitation of {t.expert} on {cfg.env.id}: behaviour cloning + {t.imitation.dagger_rounds} DAgger rounds")
        with progress("teacher: imitation") as update:
            kw = {"config": config, "log": log, "progress": update}
            return train_imitation(eval_env_fn, t, out, cfg.seed, device, max_minutes, **kw) is not None
    log(f"teacher: SB3 PPO on {cfg.env.id}, {t.total_timesteps} steps, {t.n_envs} envs")
    report = functools.partial(outputs.teacher_progress, tracker, t)
    kw = {"config": config, "on_replay": outputs.replay_progress}
    return train_teacher(env_fn, t, out, cfg.seed, device, report, max_minutes, **kw) is not None
