"""The experiment pipeline: teacher → states → teacher maps → students → evaluation (→ saliency bench, attacks).

Each stage is a short method that calls library functions and hands over through the run folder
(:class:`digr.running.run_folder.RunFolder`). Finished stages are skipped, unfinished ones resume from their
checkpoints, and a stage made under another config is refused (:mod:`digr.running.stages`).
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import torch as th

from digr import __version__
from digr.checkpoint import sha256_file, write_text_atomic
from digr.contracts import make_env
from digr.errors import ConfigError, StageError
from digr.evaluation.attack_cells import attack_protocol, count_reused, merge_cells
from digr.evaluation.latency import latency_rows, latency_summary
from digr.evaluation.robustness import robustness_sweep
from digr.evaluation.run_metrics import evaluate_agents
from digr.evaluation.saliency_bench import bench_methods, build_methods
from digr.method.dagger import dagger_seed, labelled_round, run_dagger
from digr.method.dataset import SPLITS, collect_states, load_dataset, perturbation_maps, save_dataset, split_seed
from digr.method.distill import DistillData, train_student
from digr.method.masks import penalty_mask
from digr.policies import copy_pretrained_teacher, load_student, load_teacher, new_student, save_student, teacher_spaces
from digr.policies.ppo import train_teacher
from digr.policies.sb3_zip import import_sb3_zip
from digr.running import outputs
from digr.running.config import ExperimentConfig, config_to_dict, validate_attack_agents
from digr.running.console import log, progress
from digr.running.run_folder import RunFolder
from digr.running.stages import Stages
from digr.running.tracking import Tracker

__all__ = ["Pipeline"]


class Pipeline:
    """Runs the stages of one experiment in its run folder (module docstring).

    :param cfg: the validated experiment config.
    """

    def __init__(self, cfg: ExperimentConfig):
        self.cfg, self.device = cfg, cfg.device
        self.folder = RunFolder(cfg.run_path)
        self.stages = Stages(self.folder, config_to_dict(cfg), config_to_dict(ExperimentConfig()))
        th.manual_seed(cfg.seed)
        self.env_fn = functools.partial(make_env, cfg.env.id, **cfg.env.kwargs)
        eval_kwargs = cfg.env.kwargs if cfg.env.eval_kwargs is None else cfg.env.eval_kwargs
        self.eval_env_fn = functools.partial(make_env, cfg.env.eval_id or cfg.env.id, **eval_kwargs)
        self.tracker = Tracker(False, "", "", {}, self.folder.root)

    def _track(self) -> Tracker:
        if self.tracker.run is None and self.cfg.track:
            self.tracker = Tracker(True, self.cfg.wandb_project, self.cfg.name, config_to_dict(self.cfg), self.folder.root)
        return self.tracker

    def load_teacher(self):
        """The run's teacher (:class:`digr.policies.SB3Teacher`). :raises CheckpointError: missing or corrupt."""
        return load_teacher(self.folder.teacher.weights, self.device)

    def load_students(self) -> dict:
        """Every configured student by name, in eval mode. :raises StageError: a student is not trained yet."""
        for spec in self.cfg.distill.students:
            if not self.stages.is_done("distill", spec.name):
                raise StageError(f"student {spec.name!r} is not trained yet in {self.folder.root}; run `digr distill` or `digr run` first")
        return {s.name: load_student(self.folder.student(s.name).weights, self.device) for s in self.cfg.distill.students}

    def _agents(self) -> dict:
        """``{"teacher": ..., **students}`` (students checked first: they are what a later stage lacks)."""
        students = self.load_students()
        return {"teacher": self.load_teacher(), **students}

    def teacher(self, max_minutes: float | None = None) -> bool:
        """Train (or resume) the PPO teacher, or install a ready one (``teacher.sb3_zip`` / ``teacher.pretrained``, checked
        against the env and the config's architecture). With ``max_minutes`` training checkpoints and stops after that
        much wall time. Returns True when the teacher is finished.

        :raises CheckpointError: a ready teacher that is unreadable or does not fit the env.
        :raises ConfigError: a pretrained teacher whose architecture differs from the config's."""
        cfg, t, out = self.cfg, self.cfg.teacher, self.folder.teacher
        outputs.write_run_info(self.folder, cfg, __version__)
        if self.stages.is_done("teacher"):
            log(f"teacher: done ({out.root}), skipping")
            return True
        t0 = time.perf_counter()
        if t.sb3_zip or t.pretrained:
            env = self.env_fn()
            spaces = teacher_spaces(env)
            env.close()
            if t.sb3_zip:
                obs = spaces["observation"]
                import_sb3_zip(t.sb3_zip, out, tuple(obs["image"]), spaces["n_actions"], has_side="side" in obs)
            else:
                copy_pretrained_teacher(t.pretrained, out, spaces, t)
            log(f"teacher: installed {t.sb3_zip or t.pretrained} in {out.root} (checked against the env, nothing unpickled)")
        else:
            log(f"teacher: SB3 PPO on {cfg.env.id} for {t.total_timesteps} steps ({t.n_envs} envs); checkpoints every {t.checkpoint_every}")
            report = functools.partial(outputs.teacher_progress, self._track(), t)
            if train_teacher(self.env_fn, t, out, seed=cfg.seed, device=self.device, report=report, max_minutes=max_minutes) is None:
                log(f"teacher: stopped after the {max_minutes:g}-minute budget, checkpoint kept in {out.checkpoint_dir}; rerun to resume")
                return False
            outputs.write_provenance(out, cfg, __version__)
        self.stages.mark_done("teacher", started=t0)
        return True

    def dataset(self) -> None:
        """Training and held-out states from teacher rollouts (disjoint episode seeds), labelled with its logits."""
        if self.stages.is_done("dataset"):
            return log("dataset: done, skipping")
        t0, teacher, d = time.perf_counter(), self.load_teacher(), self.cfg.dataset
        for split in SPLITS:
            n = d.train_frames if split == "train" else d.heldout_frames
            with progress(f"dataset: {split} states", n) as update:
                ds = collect_states(self.eval_env_fn, teacher, n, split_seed(self.cfg.seed, split), d.temperature, progress=update,
                                    max_per_episode=d.max_per_episode)  # fmt: skip
            save_dataset(ds, self.folder.dataset(split))
            log(f"dataset: {split}: {len(ds)} states from {len(np.unique(ds.episode))} episodes")
        self.stages.mark_done("dataset", started=t0)

    def saliency(self) -> None:
        """The teacher's perturbation map of every stored state (batched)."""
        if self.stages.is_done("saliency"):
            return log("saliency: done, skipping")
        t0, teacher = time.perf_counter(), self.load_teacher()
        for split in SPLITS:
            maps = self._teacher_maps(teacher, load_dataset(self.folder.dataset(split)), f"saliency: teacher maps ({split})")
            outputs.save_maps(maps, self.folder.teacher_maps(split))
            log(f"saliency: {split}: {len(maps)} perturbation maps")
        self.stages.mark_done("saliency", started=t0)

    def _teacher_maps(self, teacher, ds, label: str) -> np.ndarray:
        with progress(label, len(ds)) as update:
            return perturbation_maps(teacher, ds, self.cfg.perturbation, self.device, progress=update)

    def _mask(self, kind: str, n_hw: tuple, maps: np.ndarray | None):
        m = self.cfg.mask
        return penalty_mask(kind, n_hw, maps if kind == "selective" else None, kappa=m.kappa, top_p=m.top_p, dilate=m.dilate)

    def distill(self, only: str | None = None) -> None:
        """Train every student of ``distill.students`` (or only ``only``), with DAgger rounds if configured; each resumes
        from its checkpoint. :raises ConfigError: ``only`` names no configured student."""
        cfg, d = self.cfg, self.cfg.distill
        specs = [s for s in d.students if only is None or s.name == only]
        if not specs:
            raise ConfigError(f"--student {only!r}: no such student; configured students: {[s.name for s in d.students]}")
        ds, sal = load_dataset(self.folder.dataset("train")), np.load(self.folder.teacher_maps("train"))
        for spec in specs:
            if self.stages.is_done("distill", spec.name):
                log(f"distill: student {spec.name!r} done, skipping")
                continue
            t0, files = time.perf_counter(), self.folder.student(spec.name)
            data = DistillData(ds.images, ds.teacher_logits, ds.side, self._mask(spec.mask, sal.shape, sal))
            student = new_student(ds.images.shape[1:], ds.teacher_logits.shape[1], 0 if ds.side is None else ds.side.shape[1], cfg.teacher, cfg.seed)
            self.folder.mkdir()
            teacher = self.load_teacher() if d.dagger_rounds else None

            def train(data: DistillData, total: int, spec=spec, files=files, student=student) -> list[dict]:
                log_row = functools.partial(outputs.distill_progress, self._track(), spec.name, total)
                with progress(f"distill: {spec.name} (λ={spec.lam:g}, mask={spec.mask})", total) as update:
                    return train_student(student, data, lam=spec.lam, steps=total, batch_size=d.batch_size, lr=d.learning_rate, tau=d.tau,
                                         target=d.target, seed=cfg.seed, checkpoint_path=files.checkpoint, checkpoint_every=d.checkpoint_every,
                                         log=log_row, progress=update, device=self.device, penalty_batch_size=d.penalty_batch_size)  # fmt: skip

            def round_data(r: int, spec=spec, files=files, student=student, teacher=teacher) -> DistillData:
                maps_fn = (lambda s: self._teacher_maps(teacher, s, f"distill: {spec.name} DAgger {r} maps")) if spec.mask == "selective" else None
                states, maps = labelled_round(files.dagger_states(r), files.dagger_maps(r), env_fn=self.eval_env_fn, student=student, teacher=teacher,
                                              frames=d.dagger_frames, seed=dagger_seed(cfg.seed, r), max_per_episode=cfg.dataset.max_per_episode,
                                              teacher_maps=maps_fn)  # fmt: skip
                log(f"distill: {spec.name} DAgger round {r}: {len(states)} student-visited states")
                return DistillData(states.images, states.teacher_logits, states.side, self._mask(spec.mask, (len(states), *states.images.shape[2:]), maps))

            history = run_dagger(data, rounds=d.dagger_rounds, steps=d.steps, round_data=round_data, train=train)
            save_student(student, files.weights)
            write_text_atomic(files.history, json.dumps(history))
            self.stages.mark_done("distill", spec.name, started=t0)

    def evaluate(self):
        """Returns, map quality, latency, figures and the report; returns the report's path."""
        t0, cfg, e, f = time.perf_counter(), self.cfg, self.cfg.evaluate, self.folder
        agents = self._agents()
        held, ref = load_dataset(f.dataset("heldout")), np.load(f.teacher_maps("heldout"))
        with progress("evaluate", e.episodes) as update:
            metrics, maps = evaluate_agents(agents, held, ref, env_fn=self.eval_env_fn, episodes=e.episodes, seed=e.seed, deterministic=e.deterministic,
                                            top_percent=e.top_percent, device=self.device, log=log,
                                            progress=lambda name, k, n: update(k, n, f"evaluate: {name} returns"))  # fmt: skip
        metrics["teacher"]["num_timesteps"] = json.loads(f.teacher.spec.read_text()).get("num_timesteps")
        for s in cfg.distill.students:
            metrics["students"][s.name].update({"lam": s.lam, "mask": s.mask})
        image, side = held.tensors(device=self.device)
        rows = latency_rows(agents["teacher"], agents[cfg.distill.students[0].name], image, side, cfg.perturbation, sorted({1, e.latency_batch}), e.latency_repeats)
        metrics["latency"] = latency_summary(rows)
        train_maps = np.load(f.teacher_maps("train"))[:512]
        metrics["mask_fraction"] = float(self._mask("selective", train_maps.shape, train_maps).mean())
        write_text_atomic(f.metrics, json.dumps(metrics, indent=2))
        outputs.run_figures(f, cfg, held, maps)
        self.stages.mark_done("evaluate", started=t0)
        self._track().log(outputs.tracked_metrics(metrics))
        log(f"evaluate: report written to {outputs.write_report(f, self.stages)}")
        return f.report

    def saliency_bench(self, force: bool = False) -> dict | None:
        """Every saliency method on the teacher and the students (:mod:`digr.evaluation.saliency_bench`) on held-out
        frames; writes ``saliency_bench/`` and a report section. Skipped when finished with this config unless ``force``."""
        if not force and self.stages.is_done("saliency_bench"):
            return log("saliency-bench: done, skipping")
        t0, cfg, sb, f = time.perf_counter(), self.cfg, self.cfg.saliency_bench, self.folder
        agents = self._agents()
        held, ref = load_dataset(f.dataset("heldout")), np.load(f.teacher_maps("heldout"))
        idx = np.linspace(0, len(held) - 1, min(sb.frames, len(held))).round().astype(int)
        image, side = held.tensors(idx, self.device)
        target = held.target_mask[idx] if held.target_mask[idx].any() else None
        with progress("saliency-bench") as update:
            results = bench_methods(agents, image, side, th.as_tensor(ref[idx]), target, build_methods(sb, cfg.perturbation, cfg.seed), sb,
                                    top=cfg.evaluate.top_percent, seed=cfg.seed, reference_label=f"teacher perturbation (stride {cfg.perturbation.stride})",
                                    log=log, progress=lambda what, k, n: update(k, n, f"saliency-bench: {what}"))  # fmt: skip
        outputs.write_bench(f, results)
        self.stages.mark_done("saliency_bench", started=t0)
        log(f"saliency-bench: table in {f.bench.table}; report {outputs.write_report(f, self.stages)}")
        return results

    def attack(self, attacks: list[str] | None = None, eps: list | None = None, episodes: int | None = None,
               agents: list[str] | None = None):  # fmt: skip
        """Closed- and open-loop robustness of the teacher and the students under ℓ∞ observation attacks; arguments override
        the config's ``attack`` section. Cells of earlier calls under the same protocol are reused, stale files set aside
        (:mod:`digr.evaluation.attack_cells`); every finished cell reaches ``attack/partial.json`` at once. Returns the
        table's path. :raises StageError: students not trained, or a corrupt results file.
        :raises ConfigError: ``agents`` names neither ``teacher`` nor a student."""
        cfg, a, f, files = self.cfg, self.cfg.attack, self.folder, self.folder.attack
        pool = self._agents()
        students = [k for k in pool if k != "teacher"]
        attacks, eps, episodes = attacks or a.attacks, eps or a.eps, episodes or a.episodes or cfg.evaluate.episodes
        validate_attack_agents(agents or a.agents, students, "--agents")
        pool = {k: v for k, v in pool.items() if k in (agents or a.agents or pool)}
        held = load_dataset(f.dataset("heldout"))
        n = min(a.open_loop_frames, len(held))
        image, side = held.tensors(slice(n), self.device)
        weights = {"teacher": sha256_file(f.teacher.weights), **{s: sha256_file(f.student(s).weights) for s in students}}
        protocol = attack_protocol(weights, episodes=episodes, open_loop_frames=n, seed=cfg.evaluate.seed, n_parallel=a.n_parallel, batch_size=a.batch_size)
        stamp, t0 = time.strftime("%Y%m%dT%H%M%S"), time.perf_counter()
        plan = files.start(protocol, stamp)
        log(f"attack: {list(pool)} × {attacks} × ε {eps}: {episodes} episodes each (closed loop) + {n} held-out states (open loop)")
        with progress("attack") as update:
            rows = robustness_sweep(pool, attacks, eps, env_fn=self.eval_env_fn, episodes=episodes, seed=cfg.evaluate.seed, image=image, side=side,
                                    batch_size=a.batch_size, n_parallel=a.n_parallel, done=plan.reusable, on_row=files.recorder(protocol),
                                    attack_kwargs=a.options, progress=lambda k, total, label: update(k, total, f"attack: {label}"))  # fmt: skip
        if reused := count_reused(rows, plan.reusable):
            log(f"attack: {reused} of {len(rows)} cells were done earlier with the same weights, protocol and attack settings, and reused")
        rows, attacks, labels = merge_cells(plan.reusable, rows, attacks, eps, ["teacher", *students])
        result = {"attacks": attacks, "eps": labels, "episodes": episodes, "open_loop_frames": n, "seed": cfg.evaluate.seed, "n_parallel": a.n_parallel,
                  "batch_size": a.batch_size, "weights_sha256": weights, "elapsed_s": round(time.perf_counter() - t0, 1), "rows": rows}  # fmt: skip
        if aside := files.finish(plan, result, stamp):  # cells of other weights or another protocol leave the table, not the disk
            log(f"attack: earlier cells made with other weights or another protocol were set aside in {aside}")
        outputs.write_attack(f, rows)
        log(f"attack: table in {files.table}; report {outputs.write_report(f, self.stages)}")
        return files.table

    def latency(self, batches, repeats: int, threads) -> tuple[list[dict], str]:
        """``digr bench saliency``: rows of :func:`digr.evaluation.latency.bench_latency` and where the networks came from
        (the run's trained teacher and student when the run folder has them, else untrained ones of the configured
        architecture: latency does not depend on the weights)."""
        return outputs.bench_latency(self.folder, self.cfg, self.env_fn, batches, repeats, threads)

    def run(self):
        """All stages in order, skipping finished ones; returns the report's path."""
        self.teacher()
        self.dataset()
        self.saliency()
        self.distill()
        report = self.evaluate()
        if self.cfg.saliency_bench.in_run:
            self.saliency_bench()
        return report

    def close(self) -> None:
        """Finish experiment tracking."""
        self.tracker.finish()

