"""What a run writes besides the method's artefacts: run info and provenance, progress lines, figures, tables and the
report, each put where :class:`digr.running.run_folder.RunFolder` says. Rendering itself is :mod:`digr.report`'s; this
module only feeds it the run's rows and writes the results (atomically)."""

from __future__ import annotations

import json
import platform
import sys
import time

import numpy as np
import torch as th
import yaml

from digr.checkpoint import sha256_file, write_text_atomic
from digr.errors import CheckpointError
from digr.evaluation.attack_cells import eps_label
from digr.evaluation.rollout_reuse import reusable_rollouts, rollout_fingerprints
from digr.method.dataset import StateDataset
from digr.policies.teacher import TeacherFolder
from digr.report.attack import attack_section, robustness_table
from digr.report.bench import bench_section, bench_table
from digr.report.figures import plot_curve, plot_distill_history, plot_quality_vs_cost, plot_return_vs_eps, plot_saliency_grid
from digr.report.run import FIGURES, run_report
from digr.running.config import ExperimentConfig, config_to_dict
from digr.running.console import log
from digr.running.run_folder import RunFolder
from digr.running.stages import Stages
from digr.running.tracking import Tracker

__all__ = [
    "agent_info",
    "distill_progress",
    "read_json",
    "refresh_report",
    "replay_progress",
    "rollout_reuse",
    "teacher_progress",
    "track_evaluation",
    "tracked_metrics",
    "weights_sha256",
    "write_attack",
    "write_bench",
    "write_evaluation",
    "write_provenance",
    "write_report",
    "write_run_info",
]


def read_json(path) -> dict | list:
    """A JSON file a stage wrote. :raises CheckpointError: it is unreadable (named, with what to do)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is unreadable ({type(e).__name__}: {e}); delete it and rerun `digr run` with the same config: "
            "the stage that writes it is redone"
        ) from e


def agent_info(folder: RunFolder, cfg: ExperimentConfig) -> dict[str, dict]:
    """What ``metrics.json`` records beside each agent's numbers: the teacher's env steps, each student's λ and mask."""
    info = {"teacher": {"num_timesteps": read_json(folder.teacher.spec).get("num_timesteps")}}
    return info | {s.name: {"lam": s.lam, "mask": s.mask} for s in cfg.distill.students}


def weights_sha256(folder: RunFolder, students: list[str]) -> dict[str, str]:
    """SHA-256 (hex) of the teacher's and each named student's weights file, by agent name."""
    return {"teacher": sha256_file(folder.teacher.weights), **{s: sha256_file(folder.student(s).weights) for s in students}}


def rollout_reuse(folder: RunFolder, cfg: ExperimentConfig, students: list[str], version: str) -> tuple[dict, dict]:
    """``(fingerprints, reusable)`` of the evaluation's closed-loop returns (:mod:`digr.evaluation.rollout_reuse`): the
    fingerprint of every agent under each protocol (weights, env config, protocol env kwargs, episodes, seed, greedy or
    sampled, ``version``), and the summaries in the run's current ``metrics.json`` measured under the same fingerprint
    (none if it is missing or unreadable: everything is then measured again)."""
    e = cfg.evaluate
    base = {"env": config_to_dict(cfg)["env"], "episodes": e.episodes, "seed": e.seed, "deterministic": e.deterministic}
    protocols = {"rollout": base | {"env_kwargs": e.env_kwargs}}
    if e.compare_env_kwargs is not None:
        protocols["rollout_compare"] = base | {"env_kwargs": e.compare_env_kwargs}
    fingerprints = rollout_fingerprints(weights_sha256(folder, students), protocols, version)
    try:
        previous = json.loads(folder.metrics.read_text()) if folder.metrics.is_file() else None
    except (OSError, ValueError):
        previous = None
    return fingerprints, reusable_rollouts(previous, fingerprints)


def write_run_info(folder: RunFolder, cfg: ExperimentConfig, version: str) -> None:
    """``config.yml`` (the resolved config) and ``run_info.json`` (versions, command, threads)."""
    folder.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder.config_yml, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    info = {
        "digr": version,
        "python": platform.python_version(),
        "torch": th.__version__,
        "command": " ".join(sys.argv),
        "threads": th.get_num_threads(),
    }
    write_text_atomic(folder.run_info, json.dumps(info, indent=2))


def write_provenance(teacher: TeacherFolder, cfg: ExperimentConfig, version: str) -> None:
    """``provenance.json`` beside a trained teacher: how it was made (kept when the folder is reused as
    ``teacher.pretrained``)."""
    c = config_to_dict(cfg)
    provenance = {
        "command": " ".join(sys.argv),
        "seed": cfg.seed,
        "env": c["env"],
        "teacher": c["teacher"],
        "digr": version,
        "torch": th.__version__,
        "threads": th.get_num_threads(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text_atomic(teacher.provenance, json.dumps(provenance, indent=2))


def replay_progress(done: int, total: int) -> None:
    """Log the replay of a teacher checkpoint's env steps (:mod:`digr.policies.ppo`) when a teacher resumes."""
    if done == total or done % 20_000 == 0:
        log(f"teacher: resuming: replaying the env's recorded steps {done}/{total} (restores the env state exactly)")


def teacher_progress(tracker: Tracker, t, row: dict) -> None:
    """Log one learning-curve row of PPO (:mod:`digr.policies.ppo`): to the tracker, and every 10th rollout to the console."""
    tracker.log({f"teacher/{k}": v for k, v in row.items()}, axis="teacher/steps")
    if row["steps"] % (t.n_envs * t.n_steps * 10) < t.n_envs * t.n_steps:
        score = f"  game score {row['mean_score']:.1f}" if row["mean_score"] == row["mean_score"] else ""
        log(
            f"teacher: {row['steps']:>8d}/{t.total_timesteps} steps  success {row['success_rate']:.2f}  "
            f"return {row['mean_return']:.3f}{score}  {row['steps_per_sec']:.0f} steps/s"
        )


def distill_progress(tracker: Tracker, name: str, total: int, row: dict) -> None:
    """Log one loss-history row of a student: to the tracker, and every 500 steps to the console."""
    tracker.log({f"distill/{name}/{k}": v for k, v in row.items()}, axis=f"distill/{name}/step")
    if row["step"] % 500 == 0 or row["step"] == total:
        log(f"distill: {name} step {row['step']}/{total} KL {row['kl']:.4f} penalty {row['penalty']:.3e}")


def tracked_metrics(metrics: dict) -> dict:
    """Every number of ``metrics.json`` for the tracker: ``eval/<agent>/{return,success_rate,action_agreement}``,
    the second protocol's ``eval_compare/<agent>/{return,success_rate}`` (when ``evaluate.compare_env_kwargs`` gave
    one) and ``saliency/<map>/<statistic>`` (the per-frame mean), finite or not."""
    agents = {"teacher": metrics["teacher"], **metrics["students"]}
    flat = {}
    for n, a in agents.items():
        for key, prefix in (("rollout", "eval"), ("rollout_compare", "eval_compare")):
            if key in a:
                flat[f"{prefix}/{n}/return"] = a[key]["return_mean"]
                flat[f"{prefix}/{n}/success_rate"] = a[key]["success_rate"]
        if "action_agreement" in a:
            flat[f"eval/{n}/action_agreement"] = a["action_agreement"]
    flat.update({f"saliency/{n}/{k}": v["mean"] for n, q in metrics["maps"].items() for k, v in q.items()})
    return flat


def track_evaluation(tracker: Tracker, folder: RunFolder, metrics: dict) -> None:
    """Log the evaluation to the tracker: :func:`tracked_metrics`, the map-quality table and the report's figures."""
    tracker.log(tracked_metrics(metrics))
    stats = sorted({k for q in metrics["maps"].values() for k in q})
    rows = [[name, *(q.get(k, {}).get("mean", float("nan")) for k in stats)] for name, q in metrics["maps"].items()]
    images = {f"figures/{name}": folder.figure(name) for name in FIGURES}
    tracker.log_media(images=images, tables={"eval/saliency_table": (["map", *stats], rows)})


def write_evaluation(folder: RunFolder, cfg: ExperimentConfig, metrics: dict, held: StateDataset, maps: dict[str, np.ndarray]):
    """``metrics.json`` and the report's figures: the teacher's learning curve (if it has one), saliency overlays on evenly
    spaced held-out frames, and the students' loss curves."""
    write_text_atomic(folder.metrics, json.dumps(metrics, indent=2))  # NaN allowed: Atari has no success signal
    if folder.teacher.curve.is_file():
        plot_curve(folder.teacher.curve, folder.figure("teacher_curve"), f"Teacher (PPO) on {cfg.env.id.split(':')[-1]}")
    n = min(cfg.evaluate.figure_frames, len(held))
    if n:
        idx = np.linspace(0, len(held) - 1, n).astype(int)
        plot_saliency_grid(
            held.images[idx], {k: v[idx] for k, v in maps.items()}, folder.figure("saliency_grid"), held.target_mask[idx]
        )
    histories = {s.name: read_json(folder.student(s.name).history) for s in cfg.distill.students}
    plot_distill_history(histories, folder.figure("distill_curves"))


def write_bench(folder: RunFolder, results: dict) -> None:
    """``saliency_bench/``: results.json, table.md and the quality-vs-cost figure."""
    folder.bench.dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder.bench.results, json.dumps(results, indent=2))
    write_text_atomic(folder.bench.table, bench_table(results) + "\n")
    plot_quality_vs_cost(results, folder.bench.figure)


def write_attack(folder: RunFolder, rows: list[dict], tracker: Tracker | None = None) -> None:
    """``attack/table.md`` and the return-vs-ε figure, from the merged rows (no figure when no row has closed-loop
    results, e.g. only skipped cells); both also go to ``tracker`` (table ``attack/table``, one row per cell)."""
    write_text_atomic(folder.attack.table, robustness_table(rows) + "\n")
    if any(r.get("closed_loop") and not r.get("skipped") for r in rows):
        plot_return_vs_eps(rows, folder.attack.figure)
    if tracker is not None:
        columns = ["agent", "attack", "eps", "return", "success_rate", "open_loop_flip_rate"]
        cells = [[r["agent"], r["attack"], eps_label(r), (r.get("closed_loop") or {}).get("return_mean"),
                  (r.get("closed_loop") or {}).get("success_rate"), (r.get("open_loop") or {}).get("flip_rate")]
                 for r in rows]  # fmt: skip
        tracker.log_media(images={"attack/return_vs_eps": folder.attack.figure}, tables={"attack/table": (columns, cells)})


def write_report(folder: RunFolder, stages: Stages):
    """(Re)write ``report.md`` from ``metrics.json``, the figures that exist and the saliency-bench and attack results;
    the config shown is the one the evaluation was made with. Returns its path, or None before the first evaluation
    (the sections join the report when ``digr evaluate`` writes it)."""
    cfg = stages.config_of("evaluate")
    if cfg is None or not folder.metrics.is_file():
        return None
    figures = {name: folder.link(folder.figure(name)) for name in FIGURES if folder.figure(name).is_file()}
    sections = []
    if folder.bench.results.is_file():
        sections.append(bench_section(read_json(folder.bench.results), folder.link(folder.bench.figure)))
    if folder.attack.results.is_file():
        link = folder.link(folder.attack.figure) if folder.attack.figure.is_file() else None
        sections.append(attack_section(read_json(folder.attack.results), link))
    write_text_atomic(folder.report, run_report(read_json(folder.metrics), cfg, figures, sections))
    return folder.report


def refresh_report(folder: RunFolder, stages: Stages) -> str:
    """:func:`write_report`, and a line saying where the report is (or that ``digr evaluate`` will write it)."""
    path = write_report(folder, stages)
    return f"report {path}" if path else "the report joins these results when `digr evaluate` writes it"
