"""The experiment pipeline: teacher → states → teacher maps → students → evaluation (→ saliency bench, attacks). Each
stage is a short method that calls library functions and hands over through the run folder (:class:`RunFolder`). Finished
stages are skipped, unfinished ones resume from their checkpoints, and a stage made under another config is refused
(:mod:`digr.running.stages`)."""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import torch as th

from digr import __version__
from digr.checkpoint import save_npy_atomic, write_text_atomic
from digr.errors import ConfigError, StageError
from digr.evaluation.attack_cells import attack_protocol, count_reused, merge_cells
from digr.evaluation.robustness import robustness_sweep
from digr.evaluation.run_metrics import evaluate_agents
from digr.evaluation.saliency_bench import bench_heldout
from digr.method import dagger
from digr.method.dataset import SPLITS, collect_states, load_dataset, load_maps, perturbation_maps, save_dataset, split_seed
from digr.method.distill import DistillData, train_student
from digr.method.masks import penalty_mask
from digr.policies import install_teacher, load_student, load_teacher, new_student, save_student
from digr.running import outputs
from digr.running.config import ExperimentConfig, config_to_dict, validate_attack_agents
from digr.running.console import log, progress
from digr.running.run_folder import RunFolder
from digr.running.stages import Stages
from digr.running.teacher_training import train_configured_teacher
from digr.running.tracking import Tracker

__all__ = ["Pipeline"]


class Pipeline:
    """Runs the stages of one experiment in its run folder (module docstring). :param cfg: the validated config."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg, self.device, self.folder = cfg, cfg.device, RunFolder(cfg.run_path)
        self.stages = Stages(self.folder, config_to_dict(cfg), config_to_dict(ExperimentConfig()))
        th.manual_seed(cfg.seed)
        self.env_fn, self.eval_env_fn = cfg.env.make_fn(), cfg.env.make_fn(evaluation=True)
        self._mask = functools.partial(penalty_mask, kappa=cfg.mask.kappa, top_p=cfg.mask.top_p, dilate=cfg.mask.dilate)
        self.tracker = Tracker(cfg.track, cfg.wandb_project, cfg.name, config_to_dict(cfg), self.folder.root)

    def load_teacher(self):
        """The run's teacher (:class:`digr.policies.SB3Teacher`). :raises CheckpointError: missing or corrupt."""
        return load_teacher(self.folder.teacher.weights, self.device)

    def load_students(self) -> dict:
        """Every configured student by name, in eval mode. :raises StageError: a student is not trained yet."""
        if untrained := [s.name for s in self.cfg.distill.students if not self.stages.is_done("distill", s.name)]:
            raise StageError(f"students {untrained} are not trained in {self.folder.root}; run `digr distill` or `digr run`")
        return {s.name: load_student(self.folder.student(s.name).weights, self.device) for s in self.cfg.distill.students}

    def _agents(self) -> dict:
        students = self.load_students()  # first: what a later stage lacks
        return {"teacher": self.load_teacher(), **students}

    def teacher(self, max_minutes: float | None = None) -> bool:
        """Train (or resume) the teacher (PPO or imitation: ``teacher.kind``), or install a ready one (``teacher.sb3_zip``,
        ``pretrained``); True when finished. ``max_minutes``: checkpoint, stop after that wall time.
        :raises CheckpointError, ConfigError: bad ready teacher."""
        cfg, t, out = self.cfg, self.cfg.teacher, self.folder.teacher
        self.stages.preflight()  # every build stage agrees with the config before config.yml is written
        outputs.write_run_info(self.folder, cfg, __version__)
        if self.stages.is_done("teacher"):
            log(f"teacher: done ({out.root}), skipping")
            return True
        t0 = time.perf_counter()
        if t.sb3_zip or t.pretrained:
            env = self.env_fn()
            log(f"teacher: installed {install_teacher(t, out, env)} in {out.root} (checked against the env, not unpickled)")
            env.close()
        else:
            args = (cfg, out, self.env_fn, self.eval_env_fn, self.device, self.tracker, self.stages.config_for("teacher"))
            if not train_configured_teacher(*args, max_minutes):
                log(f"teacher: stopped at the {max_minutes:g}-minute budget; rerun to resume from {out.checkpoint_dir}")
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
            n, seed = d.train_frames if split == "train" else d.heldout_frames, split_seed(self.cfg.seed, split)
            with progress(f"dataset: {split} states", n) as update:
                ds = collect_states(self.eval_env_fn, teacher, n, seed, d.temperature, update, d.cap(split))
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
            save_npy_atomic(maps, self.folder.teacher_maps(split))
            log(f"saliency: {split}: {len(maps)} perturbation maps")
        self.stages.mark_done("saliency", started=t0)

    def _teacher_maps(self, teacher, ds, label: str) -> np.ndarray:
        with progress(label, len(ds)) as update:
            return perturbation_maps(teacher, ds, self.cfg.perturbation, self.device, progress=update)

    def distill(self, only: str | None = None) -> None:
        """Train every student of ``distill.students`` (or only ``only``), with DAgger rounds if configured; each resumes
        from its checkpoint. :raises ConfigError: ``only`` names no configured student."""
        cfg, d = self.cfg, self.cfg.distill
        specs = [s for s in d.students if only in (None, s.name)]
        if not specs:
            raise ConfigError(f"--student {only!r}: no such student; configured students: {[s.name for s in d.students]}")
        self.stages.preflight(students=[s.name for s in specs])
        ds, sal = load_dataset(self.folder.dataset("train")), load_maps(self.folder.teacher_maps("train"))
        for spec in specs:
            if self.stages.is_done("distill", spec.name):
                log(f"distill: student {spec.name!r} done, skipping")
                continue
            t0, files = time.perf_counter(), self.folder.student(spec.name).fresh()  # no stale DAgger rounds mixed in
            data = DistillData(ds.images, ds.teacher_logits, ds.side, self._mask(spec.mask, sal.shape, sal))
            shape, n_actions = ds.images.shape[1:], ds.teacher_logits.shape[1]
            student = new_student(shape, n_actions, ds.side_dim, cfg.teacher, cfg.seed, spec.attention)
            teacher = self.load_teacher() if d.dagger_rounds else None
            round_data = functools.partial(self._dagger_round, spec, student, teacher)
            train = functools.partial(self._train, spec, student)
            history = dagger.run_dagger(data, rounds=d.dagger_rounds, steps=d.steps, round_data=round_data, train=train)
            save_student(student, files.weights)
            write_text_atomic(files.history, json.dumps(history))
            self.stages.mark_done("distill", spec.name, started=t0)

    def _train(self, spec, student, data: DistillData, total: int) -> list[dict]:
        """Train ``student`` to ``total`` steps on ``data`` (:func:`digr.method.distill.train_student`), resuming."""
        d, files = self.cfg.distill, self.folder.student(spec.name)
        kw = {"batch_size": d.batch_size, "lr": d.learning_rate, "tau": d.tau, "target": d.target, "seed": self.cfg.seed}
        kw |= {"checkpoint_every": d.checkpoint_every, "penalty_batch_size": d.penalty_batch_size, "device": self.device}
        kw["config"] = self.stages.config_for("distill", spec.name)
        log_row = functools.partial(outputs.distill_progress, self.tracker, spec.name, total)
        with progress(f"distill: {spec.name} (λ={spec.lam:g}, mask={spec.mask})", total) as update:
            kw |= {"checkpoint_path": files.checkpoint, "log": log_row, "progress": update}
            return train_student(student, data, lam=spec.lam, steps=total, attention_entropy=spec.attention_entropy, **kw)

    def _dagger_round(self, spec, student, teacher, r: int) -> DistillData:
        """The student's teacher-labelled states of DAgger round ``r`` (:func:`digr.method.dagger.labelled_round`)."""
        cfg, files = self.cfg, self.folder.student(spec.name)
        d, seed = self.cfg.dataset, dagger.dagger_seed(cfg.seed, r)
        collect = functools.partial(collect_states, self.eval_env_fn, teacher, cfg.distill.dagger_frames, seed, actor=student,
                                    max_per_episode=d.max_per_episode)  # fmt: skip
        maps_fn = functools.partial(self._teacher_maps, teacher, label=f"distill: {spec.name} DAgger {r} maps")
        selective = maps_fn if spec.mask == "selective" else None
        states, maps = dagger.labelled_round(files.dagger_states(r), files.dagger_maps(r), collect, selective)
        log(f"distill: {spec.name} DAgger round {r}: {len(states)} student-visited states")
        masks = self._mask(spec.mask, (len(states), *states.images.shape[2:]), maps)
        return DistillData(states.images, states.teacher_logits, states.side, masks)

    def evaluate(self, force: bool = True):
        """Returns, map quality, latency, figures and the report; returns its path. Unless ``force``: skipped if current."""
        t0, cfg, f = time.perf_counter(), self.cfg, self.folder
        if not force and self.stages.is_current("evaluate"):
            return log("evaluate: done with this config and these students, skipping (`digr evaluate` redoes it)") or f.report
        agents = self._agents()
        held, ref = load_dataset(f.dataset("heldout")), load_maps(f.teacher_maps("heldout"))
        prints, reuse = outputs.rollout_reuse(f, cfg, [k for k in agents if k != "teacher"], __version__)
        kw = {"info": outputs.agent_info(f, cfg), "log": log, "device": self.device, "perturbation": cfg.perturbation}
        kw["reuse"] = reuse
        with progress("evaluate", cfg.evaluate.episodes) as update:
            tick = lambda name, k, n: update(k, n, f"evaluate: {name} returns")
            metrics, maps = evaluate_agents(agents, held, ref, cfg.evaluate, *cfg.protocol_env_fns(), progress=tick, **kw)
        train_maps = load_maps(f.teacher_maps("train"))[:512]
        metrics["mask_fraction"] = float(self._mask("selective", train_maps.shape, train_maps).mean())
        outputs.write_evaluation(f, cfg, metrics | {"rollout_fingerprints": prints}, held, maps)
        self.stages.mark_done("evaluate", started=t0)
        outputs.track_evaluation(self.tracker, f, metrics)
        log(f"evaluate: report written to {outputs.write_report(f, self.stages)}")
        return f.report

    def saliency_bench(self, force: bool = False) -> dict | None:
        """Every saliency method on the teacher and the students on held-out frames (:mod:`digr.evaluation.saliency_bench`);
        writes ``saliency_bench/`` and a report section. Skipped when finished with this config unless ``force``."""
        if not force and self.stages.is_done("saliency_bench"):
            return log("saliency-bench: done, skipping")
        t0, cfg, f = time.perf_counter(), self.cfg, self.folder
        agents = self._agents()
        held, ref = load_dataset(f.dataset("heldout")), load_maps(f.teacher_maps("heldout"))
        with progress("saliency-bench") as update:
            tick = lambda what, k, n: update(k, n, f"saliency-bench: {what}")
            results = bench_heldout(agents, held, ref, cfg.saliency_bench, cfg.perturbation, top=cfg.evaluate.top_percent,
                                    seed=cfg.seed, device=self.device, log=log, progress=tick)  # fmt: skip
        outputs.write_bench(f, results)
        self.stages.mark_done("saliency_bench", started=t0)
        log(f"saliency-bench: table in {f.bench.table}; {outputs.refresh_report(f, self.stages)}")
        return results

    def attack(self, attacks: list | None = None, eps: list | None = None, episodes: int | None = None, agents=None):
        """ℓ∞ observation attacks on teacher and students (arguments override the ``attack`` section); earlier cells under
        the same protocol are reused (:mod:`digr.evaluation.attack_cells`). Returns the table's path.
        :raises StageError: untrained students or a corrupt results file. :raises ConfigError: bad ``agents``."""
        cfg, a, f, files = self.cfg, self.cfg.attack, self.folder, self.folder.attack
        pool = self._agents()
        students = [k for k in pool if k != "teacher"]
        attacks, eps, episodes = attacks or a.attacks, eps or a.eps, episodes or a.episodes or cfg.evaluate.episodes
        validate_attack_agents(agents or a.agents, students, "--agents")
        pool = {k: v for k, v in pool.items() if k in (agents or a.agents or pool)}
        held = load_dataset(f.dataset("heldout"))
        n = min(a.open_loop_frames, len(held))
        image, side = held.tensors(slice(n), self.device)
        weights = outputs.weights_sha256(f, students)
        common = {"episodes": episodes, "open_loop_frames": n, "seed": cfg.evaluate.seed, "n_parallel": a.n_parallel}
        common["batch_size"], common["env_kwargs"] = a.batch_size, cfg.evaluate.env_kwargs  # the protocol of a cell
        protocol, stamp, t0 = attack_protocol(weights, **common), time.strftime("%Y%m%dT%H%M%S"), time.perf_counter()
        plan = files.start(protocol, stamp)
        log(f"attack: {list(pool)} × {attacks} × ε {eps}: {episodes} episodes (closed loop) + {n} held-out states (open loop)")
        with progress("attack") as update:
            tick = lambda k, total, label: update(k, total, f"attack: {label}")
            rows = robustness_sweep(pool, attacks, eps, env_fn=cfg.protocol_env_fns()[0], episodes=episodes,
                                    seed=cfg.evaluate.seed, image=image, side=side, batch_size=a.batch_size,
                                    n_parallel=a.n_parallel, done=plan.reusable, on_row=files.recorder(protocol),
                                    attack_kwargs=a.options, progress=tick)  # fmt: skip
        if reused := count_reused(rows, plan.reusable):
            log(f"attack: {reused} of {len(rows)} cells reused (same weights, protocol and attack settings)")
        rows, attacks, labels = merge_cells(plan.reusable, rows, attacks, eps, ["teacher", *students])
        elapsed = round(time.perf_counter() - t0, 1)
        result = {"attacks": attacks, "eps": labels, **common, "weights_sha256": weights, "elapsed_s": elapsed, "rows": rows}
        if aside := files.finish(plan, result, stamp):  # cells of other weights/protocols leave the table, not the disk
            log(f"attack: earlier cells made with other weights or another protocol were set aside in {aside}")
        outputs.write_attack(f, rows, self.tracker)
        log(f"attack: table in {files.table}; {outputs.refresh_report(f, self.stages)}")
        return files.table

    def run(self):
        """All stages in order, skipping finished ones; returns the report's path."""
        self.stages.preflight()
        for stage in (self.teacher, self.dataset, self.saliency, self.distill):
            stage()
        report = self.evaluate(force=False)
        if self.cfg.saliency_bench.in_run:
            self.saliency_bench()
        return report

    def close(self) -> None:
        """Finish experiment tracking."""
        self.tracker.finish()
