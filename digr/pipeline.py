"""The experiment pipeline: teacher → dataset → teacher saliency → distill (one per student) → evaluate → report.

Every stage writes its artefacts into the run folder ``{run_dir}/{name}/`` and, when finished, a marker
``stages/<stage>.json`` holding the config it was made with. A rerun skips finished stages whose config is unchanged,
resumes unfinished ones from their checkpoints (teacher and students), and refuses — naming the changed fields — to
mix artefacts made under a different config, so nothing already saved is overwritten silently.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from digr import __version__
from digr.checkpoint import sha256_file, write_text_atomic
from digr.config import ExperimentConfig, StageError, config_to_dict, validate_attack_agents
from digr.dataset import collect_states, load_dataset, save_dataset
from digr.distill import DistillData, train_student
from digr.envs_contract import make_env
from digr.evaluate import agree_actions, batched, map_quality, rollout_returns
from digr.masks import selective_mask
from digr.nets import PolicyNet
from digr.policies import greedy_action, load_student, save_student
from digr.report import plot_curve, plot_distill_history, plot_saliency_grid, write_report
from digr.saliency import gradient_saliency, perturbation_saliency
from digr.sb3_zip import import_sb3_zip
from digr.teacher import copy_pretrained_teacher, load_teacher, teacher_spaces, train_teacher
from digr.tracking import Tracker

__all__ = ["StageConfigMismatch", "Pipeline", "STAGES"]

STAGES = ("teacher", "dataset", "saliency", "distill", "evaluate", "saliency_bench")
console = Console(stderr=True)


class StageConfigMismatch(StageError):
    """A finished stage in the run folder was made with a different config than the one given now."""


def _diff(old, new, prefix=""):
    out = []
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
    elif old != new:
        out.append(f"{prefix}: {old!r} → {new!r}")
    return out


def _drop_new_defaults(old, new, default):
    """``new`` without the keys that ``old`` lacks and whose value is the config default (fields added to DIGR after
    the stage finished, left at their defaults, do not invalidate it)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    out = {}
    for k, v in new.items():
        d = default.get(k) if isinstance(default, dict) else None
        if k not in old and v == d:
            continue
        out[k] = _drop_new_defaults(old.get(k), v, d)
    return out


def _save_npy(array: np.ndarray, path: Path) -> None:
    """``np.save`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def _read_attack_rows(path: Path) -> list[dict]:
    """Rows of an earlier ``attack/results.json`` or ``partial.json``; [] if absent.

    :raises StageError: the file exists but is not valid JSON (it is left in place).
    """
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("rows", []))
    except (json.JSONDecodeError, AttributeError) as e:
        raise StageError(f"{path} is corrupt ({e}); move it away to start a new attack table") from e


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=not console.is_terminal)


class Pipeline:
    """Runs the stages of one experiment in its run folder (see module docstring)."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.path = cfg.run_path
        self.device = cfg.device
        th.manual_seed(cfg.seed)
        self.env_fn = functools.partial(make_env, cfg.env.id, **cfg.env.kwargs)
        eval_kwargs = cfg.env.kwargs if cfg.env.eval_kwargs is None else cfg.env.eval_kwargs
        self.eval_env_fn = functools.partial(make_env, cfg.env.eval_id or cfg.env.id, **eval_kwargs)
        self.tracker: Tracker | None = None

    # ---------------------------------------------------------------- bookkeeping
    def _stage_cfg(self, stage: str, student: str | None = None) -> dict:
        c = config_to_dict(self.cfg)
        deps = {"teacher": {"seed": c["seed"], "env": c["env"], "teacher": c["teacher"]}}
        deps["dataset"] = {**deps["teacher"], "dataset": c["dataset"]}
        deps["saliency"] = {**deps["dataset"], "perturbation": c["perturbation"]}
        if stage == "distill":
            spec = next(s for s in c["distill"]["students"] if s["name"] == student)
            common = {k: v for k, v in c["distill"].items() if k != "students"}
            return {**deps["saliency"], "mask": c["mask"], "distill": common, "student": spec}
        if stage in ("evaluate", "saliency_bench"):
            return c
        return deps[stage]

    def _marker(self, stage: str, student: str | None = None) -> Path:
        return self.path / "stages" / (f"{stage}-{student}.json" if student else f"{stage}.json")

    def is_done(self, stage: str, student: str | None = None) -> bool:
        """True if the stage finished with the current config; raises :class:`StageConfigMismatch` if it finished with another."""
        marker = self._marker(stage, student)
        if not marker.is_file():
            return False
        old = json.loads(marker.read_text())["config"]
        new = json.loads(json.dumps(self._stage_cfg(stage, student)))
        new = _drop_new_defaults(old, new, json.loads(json.dumps(config_to_dict(ExperimentConfig()))))
        if stage in ("evaluate", "saliency_bench"):
            return old == new  # measurements only: redo them when anything changed
        if old != new:
            changes = "; ".join(_diff(old, new)[:6])
            raise StageConfigMismatch(
                f"stage {marker.stem!r} in {self.path} was made with a different config ({changes}). Nothing was changed. "
                f"Use a new `name:` for this config, or delete {marker} and the artefacts it names to redo that stage.")
        return True

    def _mark_done(self, stage: str, student: str | None = None, started: float | None = None, **extra) -> None:
        """Write the stage marker; ``started`` (a ``time.perf_counter()`` value) records the wall time of this invocation."""
        marker = self._marker(stage, student)
        marker.parent.mkdir(parents=True, exist_ok=True)
        if started is not None:
            extra["elapsed_s"] = round(time.perf_counter() - started, 1)
        marker.write_text(json.dumps({"config": self._stage_cfg(stage, student), **extra}, indent=2))

    def _write_run_info(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yml").write_text(yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
        info = {"digr": __version__, "python": platform.python_version(), "torch": th.__version__, "command": " ".join(sys.argv),
                "threads": th.get_num_threads()}
        (self.path / "run_info.json").write_text(json.dumps(info, indent=2))

    def _start_tracking(self) -> None:
        if self.tracker is None:
            self.tracker = Tracker(self.cfg.track, self.cfg.wandb_project, self.cfg.name, config_to_dict(self.cfg), self.path)

    # ---------------------------------------------------------------- stages
    def teacher(self, max_minutes: float | None = None) -> bool:
        """Train (or resume) the PPO teacher; skipped if finished. With ``max_minutes`` it stops (checkpointed) after
        that much wall time; returns True when the teacher is finished. With ``teacher.sb3_zip`` the user's SB3 zip is
        imported instead, with ``teacher.pretrained`` a saved DIGR teacher is copied in (both checked against the env).

        :raises CheckpointError: a ready teacher that is unreadable or does not fit the env.
        :raises ConfigError: a pretrained teacher whose architecture differs from ``teacher.arch/cell/features_dim/channels``
            (the students are built from those fields)."""
        self._write_run_info()
        if self.is_done("teacher"):
            console.log(f"teacher: done ({self.path / 'teacher'}), skipping")
            return True
        t0 = time.perf_counter()
        t = self.cfg.teacher
        if t.sb3_zip or t.pretrained:
            env = self.env_fn()
            env_spaces = teacher_spaces(env)
            env.close()
            if t.sb3_zip:
                import_sb3_zip(t.sb3_zip, self.path / "teacher", tuple(env_spaces["observation"]["image"]), env_spaces["n_actions"],
                               has_side="side" in env_spaces["observation"])
                console.log(f"teacher: imported {t.sb3_zip} (SB3 CnnPolicy, read without unpickling) into {self.path / 'teacher'}")
            else:
                copy_pretrained_teacher(t.pretrained, self.path / "teacher", env_spaces, t)
                console.log(f"teacher: copied the pretrained teacher {t.pretrained} into {self.path / 'teacher'}")
            self._mark_done("teacher", started=t0)
            return True
        console.log(f"teacher: SB3 PPO on {self.cfg.env.id} for {t.total_timesteps} steps ({t.n_envs} envs); checkpoints every {t.checkpoint_every}")
        self._start_tracking()

        def report(row):
            self.tracker.log({f"teacher/{k}": v for k, v in row.items()}, step=int(row["steps"]))
            if row["steps"] % (t.n_envs * t.n_steps * 10) < t.n_envs * t.n_steps:
                score = f"  game score {row['mean_score']:.1f}" if row["mean_score"] == row["mean_score"] else ""
                console.log(f"teacher: {row['steps']:>8d}/{t.total_timesteps} steps  success {row['success_rate']:.2f}  "
                            f"return {row['mean_return']:.3f}{score}  {row['steps_per_sec']:.0f} steps/s")

        if train_teacher(self.env_fn, t, self.path / "teacher", seed=self.cfg.seed, device=self.device, report=report,
                         max_minutes=max_minutes) is None:
            console.log(f"teacher: stopped after the {max_minutes:g}-minute budget, checkpoint kept in {self.path / 'teacher' / 'checkpoint'}; "
                        "run the same command again to resume")
            return False
        # how the teacher was made, beside its weights (kept when the folder is reused as teacher.pretrained)
        cfg_dict = config_to_dict(self.cfg)
        provenance = {"command": " ".join(sys.argv), "seed": self.cfg.seed, "env": cfg_dict["env"], "teacher": cfg_dict["teacher"],
                      "digr": __version__, "torch": th.__version__, "threads": th.get_num_threads(),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_text_atomic(self.path / "teacher" / "provenance.json", json.dumps(provenance, indent=2))
        self._mark_done("teacher", started=t0)
        return True

    def load_teacher(self):
        """The trained teacher (:class:`digr.policies.SB3Teacher`)."""
        return load_teacher(self.path / "teacher" / "teacher.safetensors", self.device)

    def _weights_sha256(self) -> dict[str, str]:
        """SHA-256 of the teacher's and each student's safetensors: ``{"teacher": hex, <student name>: hex, ...}``.

        :raises CheckpointError: a checkpoint is missing.
        """
        files = {"teacher": self.path / "teacher" / "teacher.safetensors",
                 **{s.name: self.path / "students" / f"{s.name}.safetensors" for s in self.cfg.distill.students}}
        return {name: sha256_file(path) for name, path in files.items()}

    def load_students(self) -> dict:
        """Every configured student, by name (:class:`digr.nets.PolicyNet`, eval mode).

        :raises StageError: a student is not trained yet.
        """
        for spec in self.cfg.distill.students:
            if not self.is_done("distill", spec.name):
                raise StageError(f"student {spec.name!r} is not trained yet in {self.path}; run `digr distill` or `digr run` first")
        return {s.name: load_student(self.path / "students" / f"{s.name}.safetensors", self.device) for s in self.cfg.distill.students}

    def dataset(self) -> None:
        """Collect training and held-out states from teacher rollouts."""
        if self.is_done("dataset"):
            console.log("dataset: done, skipping")
            return
        t0 = time.perf_counter()
        teacher = self.load_teacher()
        d = self.cfg.dataset
        with _progress() as prog:
            for split, n, seed in (("train", d.train_frames, self.cfg.seed * 1_000_003 + 1), ("heldout", d.heldout_frames, self.cfg.seed * 1_000_003 + 500_001)):
                task = prog.add_task(f"dataset: {split} states", total=n)
                ds = collect_states(self.eval_env_fn, teacher, n, seed, d.temperature, progress=lambda k, task=task: prog.update(task, completed=k),
                                    max_per_episode=d.max_per_episode)
                save_dataset(ds, self.path / f"dataset_{split}.npz")
                console.log(f"dataset: {split}: {len(ds)} states from {len(np.unique(ds.episode))} episodes")
        self._mark_done("dataset", started=t0)

    def saliency(self) -> None:
        """Teacher perturbation saliency for every stored state (batched), saved as ``teacher_saliency_{split}.npy``."""
        if self.is_done("saliency"):
            console.log("saliency: done, skipping")
            return
        t0 = time.perf_counter()
        teacher = self.load_teacher()
        for split in ("train", "heldout"):
            ds = load_dataset(self.path / f"dataset_{split}.npz")
            maps = self._teacher_maps(teacher, ds, f"saliency: teacher perturbation maps ({split})")
            _save_npy(maps, self.path / f"teacher_saliency_{split}.npy")
            console.log(f"saliency: {split}: {len(ds)} perturbation maps")
        self._mark_done("saliency", started=t0)

    def _teacher_maps(self, teacher, ds, label: str) -> np.ndarray:
        """Teacher perturbation maps of every state of ``ds``, float32 ``[N, H, W]`` (batched, 64 frames per call)."""
        p, chunk = self.cfg.perturbation, 64
        maps = np.zeros((len(ds), *ds.images.shape[2:]), np.float32)
        with _progress() as prog:
            task = prog.add_task(label, total=len(ds))
            for i in range(0, len(ds), chunk):
                image = th.as_tensor(ds.images[i : i + chunk], device=self.device).float() / 255.0
                side = None if ds.side is None else th.as_tensor(ds.side[i : i + chunk], device=self.device)
                maps[i : i + chunk] = perturbation_saliency(teacher, image, None, side, sigma_mask=p.sigma_mask, sigma_blur=p.sigma_blur,
                                                            stride=p.stride, internal_batch_size=p.internal_batch_size).cpu().numpy()
                prog.update(task, completed=min(len(ds), i + chunk))
        return maps

    def _dagger_data(self, spec, student, teacher, round_: int) -> tuple:
        """States visited by the greedy student in DAgger round ``round_``, labelled by the teacher; cached on disk in
        ``students/<name>.dagger<round>.npz`` (+ ``.maps.npy`` for selective masks, written first) so an interrupted
        run reuses them. Returns (dataset, teacher maps or None)."""
        path = self.path / "students" / f"{spec.name}.dagger{round_}.npz"
        maps_path = path.with_suffix(".maps.npy")
        need_maps = spec.mask == "selective"
        if path.is_file():
            return load_dataset(path), (np.load(maps_path) if need_maps else None)
        d = self.cfg.distill
        seed = self.cfg.seed * 1_000_003 + 700_001 + 100_000 * round_
        ds = collect_states(self.eval_env_fn, teacher, d.dagger_frames, seed, max_per_episode=self.cfg.dataset.max_per_episode, actor=student)
        maps = None
        if need_maps:
            maps = self._teacher_maps(teacher, ds, f"distill: {spec.name} DAgger round {round_} teacher maps")
            _save_npy(maps, maps_path)
        save_dataset(ds, path)
        console.log(f"distill: {spec.name} DAgger round {round_}: {len(ds)} student-visited states from {len(np.unique(ds.episode))} episodes")
        return ds, maps

    def _masks(self, saliency: np.ndarray) -> np.ndarray:
        m = self.cfg.mask
        return np.concatenate([selective_mask(th.as_tensor(saliency[i : i + 1024]), m.kappa, m.top_p, m.dilate).numpy()
                               for i in range(0, len(saliency), 1024)])

    def distill(self, only: str | None = None) -> None:
        """Train every student of ``distill.students`` (or only ``only``); each resumes from its checkpoint."""
        ds = load_dataset(self.path / "dataset_train.npz")
        sal = np.load(self.path / "teacher_saliency_train.npy")
        d = self.cfg.distill
        specs = [s for s in d.students if only is None or s.name == only]
        if not specs:
            raise ValueError(f"no student named {only!r}; configured students: {[s.name for s in d.students]}")
        masks = None
        for spec in specs:
            if self.is_done("distill", spec.name):
                console.log(f"distill: student {spec.name!r} done, skipping")
                continue
            t0 = time.perf_counter()
            if spec.mask == "selective" and masks is None:
                masks = self._masks(sal)
            m = {"selective": masks, "all": np.ones(sal.shape, np.float32), "none": None}[spec.mask]
            data = DistillData(ds.images, ds.teacher_logits, ds.side, m)
            c, h, w = ds.images.shape[1:]
            with th.random.fork_rng():  # the initial weights depend on the seed only, not on which stages ran before
                th.manual_seed(self.cfg.seed)
                student = PolicyNet((c, h, w), ds.teacher_logits.shape[1], 0 if ds.side is None else ds.side.shape[1],
                                    self.cfg.teacher.cell, self.cfg.teacher.features_dim, arch=self.cfg.teacher.arch,
                                    channels=self.cfg.teacher.channels)
            sdir = self.path / "students"
            sdir.mkdir(parents=True, exist_ok=True)
            self._start_tracking()
            teacher = self.load_teacher() if d.dagger_rounds else None
            hist = []
            for round_ in range(d.dagger_rounds + 1):
                if round_:
                    student.eval()
                    extra, extra_maps = self._dagger_data(spec, student, teacher, round_)
                    em = {"selective": None if extra_maps is None else self._masks(extra_maps),
                          "all": np.ones((len(extra), *extra.images.shape[2:]), np.float32), "none": None}[spec.mask]
                    data = DistillData(np.concatenate([data.images, extra.images]), np.concatenate([data.teacher_logits, extra.teacher_logits]),
                                       None if data.side is None else np.concatenate([data.side, extra.side]),
                                       None if em is None else np.concatenate([data.masks, em]))
                total = d.steps * (round_ + 1)
                with _progress() as prog:
                    task = prog.add_task(f"distill: {spec.name} (λ={spec.lam:g}, mask={spec.mask})", total=total)

                    def log(rec, name=spec.name, total=total):
                        self.tracker.log({f"distill/{name}/{k}": v for k, v in rec.items() if k != "step"})
                        if rec["step"] % 500 == 0 or rec["step"] == total:
                            console.log(f"distill: {name} step {rec['step']}/{total} KL {rec['kl']:.4f} penalty {rec['penalty']:.3e}")

                    hist = train_student(student, data, lam=spec.lam, steps=total, batch_size=d.batch_size, lr=d.learning_rate, tau=d.tau,
                                         target=d.target, seed=self.cfg.seed, checkpoint_path=sdir / f"{spec.name}.ckpt.pt",
                                         checkpoint_every=d.checkpoint_every, log=log,
                                         progress=lambda k, task=task: prog.update(task, completed=k), device=self.device,
                                         penalty_batch_size=d.penalty_batch_size)
            save_student(student, sdir / f"{spec.name}.safetensors")
            (sdir / f"{spec.name}.history.json").write_text(json.dumps(hist))
            self._mark_done("distill", spec.name, started=t0)

    def evaluate(self) -> Path:
        """Returns, map quality, latency, figures and ``report.md``; returns the report path."""
        t0 = time.perf_counter()
        cfg, e = self.cfg, self.cfg.evaluate
        students = self.load_students()
        teacher = self.load_teacher()
        held = load_dataset(self.path / "dataset_heldout.npz")
        ref = th.as_tensor(np.load(self.path / "teacher_saliency_heldout.npy"))
        image = th.as_tensor(held.images, device=self.device).float() / 255.0
        side = None if held.side is None else th.as_tensor(held.side, device=self.device)
        mask = held.target_mask if held.target_mask.any() else None
        metrics = {"eval_episodes": e.episodes, "eval_seed": e.seed, "heldout_frames": len(held), "top_percent": e.top_percent,
                   "teacher": {"num_timesteps": json.loads((self.path / "teacher" / "teacher.json").read_text()).get("num_timesteps")},
                   "students": {}, "maps": {}}
        agents = {"teacher": teacher, **students}
        with _progress() as prog:
            for name, pol in agents.items():
                task = prog.add_task(f"evaluate: {name} returns", total=e.episodes)
                r = rollout_returns(self.eval_env_fn, pol, e.episodes, e.seed, e.deterministic, progress=lambda k, task=task: prog.update(task, completed=k))
                target = metrics["teacher"] if name == "teacher" else metrics["students"].setdefault(name, {})
                target["rollout"] = r
                console.log(f"evaluate: {name}: success {r['success_rate']:.3f}, return {r['return_mean']:.3f} over {e.episodes} episodes")
        for spec in cfg.distill.students:
            metrics["students"][spec.name].update({"lam": spec.lam, "mask": spec.mask,
                                                   "action_agreement": agree_actions(students[spec.name], teacher, image, side)})
        maps = {"teacher perturbation": ref.numpy()}
        t_act = greedy_action(teacher, image, side)
        maps["teacher gradient"] = batched(lambda x, s, a: gradient_saliency(teacher, x, a, s), image, side, 256, t_act).numpy()
        for name, st in students.items():
            a = greedy_action(st, image, side)
            maps[f"{name} gradient"] = batched(lambda x, s, a, st=st: gradient_saliency(st, x, a, s), image, side, 256, a).numpy()
        for name, m in maps.items():
            metrics["maps"][name] = map_quality(th.as_tensor(m), None if name == "teacher perturbation" else ref, mask, e.top_percent)
        metrics["latency"] = self._latency(teacher, next(iter(students.values())), image, side)
        metrics["mask_fraction"] = float(self._masks(np.load(self.path / "teacher_saliency_train.npy")[:512]).mean())
        self._figures(held, maps, metrics)
        report = write_report(self.path, metrics, config_to_dict(cfg))
        self._start_tracking()
        flat = {f"eval/{n}/success_rate": (metrics["teacher"] if n == "teacher" else metrics["students"][n])["rollout"]["success_rate"] for n in agents}
        flat.update({f"eval/{n}/spearman": q["spearman"]["mean"] for n, q in metrics["maps"].items() if "spearman" in q})
        self.tracker.log(flat)
        self._mark_done("evaluate", started=t0)
        console.log(f"evaluate: report written to {report}")
        return report

    def _latency(self, teacher, student, image, side) -> dict:
        from digr.bench import latency_rows

        e = self.cfg.evaluate
        rows = latency_rows(teacher, student, image, side, self.cfg.perturbation, sorted({1, e.latency_batch}), e.latency_repeats)
        ratio = {str(b): next(r["ms_per_frame"] for r in rows if r["batch"] == b and r["map"] != "student gradient")
                 / next(r["ms_per_frame"] for r in rows if r["batch"] == b and r["map"] == "student gradient") for b in sorted({1, e.latency_batch})}
        return {"threads": th.get_num_threads(), "rows": rows, "ratio": ratio}

    def _figures(self, held, maps: dict, metrics: dict) -> None:
        curve = self.path / "teacher" / "curve.csv"
        if curve.is_file():
            plot_curve(curve, self.path / "teacher_curve.png", f"Teacher (PPO) on {self.cfg.env.id.split(':')[-1]}")
        n = min(self.cfg.evaluate.figure_frames, len(held))
        idx = np.linspace(0, len(held) - 1, n).astype(int)
        plot_saliency_grid(held.images[idx], {k: v[idx] for k, v in maps.items()}, self.path / "saliency_grid.png", held.target_mask[idx])
        hist = {s.name: json.loads((self.path / "students" / f"{s.name}.history.json").read_text()) for s in self.cfg.distill.students}
        plot_distill_history(hist, self.path / "distill_curves.png")

    def saliency_bench(self, force: bool = False) -> dict | None:
        """Every saliency method on the teacher and students (:mod:`digr.saliency_bench`); adds a report section.

        Skipped when finished with the same config, unless ``force``."""
        from digr.report import refresh_report
        from digr.saliency_bench import run_saliency_bench

        if not force and self.is_done("saliency_bench"):
            console.log("saliency-bench: done, skipping")
            return None
        t0 = time.perf_counter()
        with _progress() as prog:
            task = prog.add_task("saliency-bench", total=None)
            res = run_saliency_bench(self.cfg, self.device, log=console.log,
                                     progress=lambda what, k, n: prog.update(task, completed=k, total=n, description=f"saliency-bench: {what}"))
        self._mark_done("saliency_bench", started=t0)
        report = refresh_report(self.path)
        console.log(f"saliency-bench: table in {self.path / 'saliency_bench' / 'table.md'}" + (f", report {report}" if report else ""))
        return res

    def attack(self, attacks: list[str] | None = None, eps: list | None = None, episodes: int | None = None,
               agents: list[str] | None = None) -> Path:
        """Closed- and open-loop robustness of the teacher and every student under ℓ∞ observation attacks
        (:mod:`digr.robustness`); writes ``attack/`` (results.json, table.md, return_vs_eps.png) and a report section.

        Arguments override the config's ``attack`` section. Returns the table's path. Each row records its protocol
        (episodes, open-loop frames, seed, n_parallel, batch_size, SHA-256 of the agent's weights). Every finished cell
        is written to ``attack/partial.json`` at once, and cells of earlier calls (``results.json`` or an interrupted
        call's ``partial.json``) with the same protocol are reused instead of evaluated again and stay in the table.
        If any earlier cell has another protocol (e.g. a retrained student), the old ``results.json`` (or
        ``partial.json``) is kept as ``results.superseded-<time>.json`` (``partial.superseded-<time>.json``) and its
        stale cells leave the table.
        :raises StageError: the students are not trained yet, or an earlier results file is corrupt.
        :raises ConfigError: ``agents`` names an agent that is neither ``teacher`` nor a student.
        """
        from digr.report import refresh_report
        from digr.robustness import plot_return_vs_eps, robustness_sweep, robustness_table

        cfg, a = self.cfg, self.cfg.attack
        students = self.load_students()
        attacks = attacks or a.attacks
        eps = eps or a.eps
        episodes = episodes or a.episodes or cfg.evaluate.episodes
        chosen = agents or a.agents
        validate_attack_agents(chosen, list(students), "--agents")
        agents = {"teacher": self.load_teacher(), **students}
        if chosen:
            agents = {k: v for k, v in agents.items() if k in chosen}
        held = load_dataset(self.path / "dataset_heldout.npz")
        n = min(a.open_loop_frames, len(held))
        image = th.as_tensor(held.images[:n], device=self.device).float() / 255.0
        side = None if held.side is None else th.as_tensor(held.side[:n], device=self.device)
        out = self.path / "attack"
        out.mkdir(parents=True, exist_ok=True)
        weights = self._weights_sha256()
        protocol = {name: {"episodes": episodes, "open_loop_frames": n, "seed": cfg.evaluate.seed, "n_parallel": a.n_parallel,
                           "batch_size": a.batch_size, "weights_sha256": sha} for name, sha in weights.items()}
        previous, partial = out / "results.json", out / "partial.json"
        old, pending = _read_attack_rows(previous), _read_attack_rows(partial)
        same = lambda r: r.get("agent") in protocol and r.get("protocol") == protocol[r["agent"]]  # noqa: E731
        key = lambda r: (r.get("agent"), r.get("attack"), r.get("eps"))  # noqa: E731
        reusable = list({key(r): r for r in old + pending if same(r)}.values())  # an interrupted call's cell is the newer
        stamp = time.strftime("%Y%m%dT%H%M%S")
        if any(not same(r) for r in pending):  # an interrupted call on other weights: keep its cells, out of the way
            os.replace(partial, out / f"partial.superseded-{stamp}.json")
        finished: list[dict] = []

        def save(row: dict) -> None:  # every finished cell reaches disk at once: an interrupted sweep resumes from it
            row["protocol"] = protocol[row["agent"]]
            finished.append(row)
            write_text_atomic(partial, json.dumps({"rows": finished}, indent=1, allow_nan=False))

        t0 = time.perf_counter()
        console.log(f"attack: {list(agents)} × {attacks} × ε {eps}: {episodes} episodes each (closed loop) + {n} held-out states (open loop)")
        with _progress() as prog:
            task = prog.add_task("attack", total=None)
            rows = robustness_sweep(agents, attacks, eps, env_fn=self.eval_env_fn, episodes=episodes, seed=cfg.evaluate.seed, image=image,
                                    side=side, batch_size=a.batch_size, n_parallel=a.n_parallel, done=reusable, on_row=save, attack_kwargs=a.options,
                                    progress=lambda k, total, label: prog.update(task, completed=k, total=total, description=f"attack: {label}"))
        earlier_ids = {id(r) for r in reusable}  # the sweep hands back the very row object of a cell it took from `done`
        n_reused = sum(id(r) in earlier_ids for r in rows)
        if n_reused:
            console.log(f"attack: {n_reused} of {len(rows)} cells were done earlier with the same weights, protocol and attack settings, and reused")
        new_keys = {key(r) for r in rows}
        kept = [r for r in reusable if key(r) not in new_keys]  # earlier cells this call did not ask for stay in the table
        if any(not same(r) for r in old):
            # cells of other weights (retrained agents) or another protocol cannot share this table, but they are not lost
            aside = out / f"results.superseded-{stamp}.json"
            os.replace(previous, aside)
            console.log(f"attack: earlier cells made with other weights or another protocol were set aside in {aside}")
        if kept:
            attacks = list(dict.fromkeys([r["attack"] for r in kept] + list(attacks)))
            eps = list(dict.fromkeys([r["eps_label"] for r in kept] + [str(e) for e in eps]))
            rows = kept + rows
            order = ["teacher", *students]
            rows.sort(key=lambda r: (order.index(r["agent"]) if r["agent"] in order else len(order),
                                     attacks.index(r["attack"]) if r["attack"] in attacks else len(attacks), r["eps"]))
        result = {"attacks": list(attacks), "eps": [str(e) for e in eps], "episodes": episodes, "open_loop_frames": n,
                  "seed": cfg.evaluate.seed, "n_parallel": a.n_parallel, "batch_size": a.batch_size,
                  "weights_sha256": weights, "elapsed_s": round(time.perf_counter() - t0, 1), "rows": rows}
        write_text_atomic(previous, json.dumps(result, indent=2, allow_nan=False))
        partial.unlink(missing_ok=True)
        table = robustness_table(rows)
        write_text_atomic(out / "table.md", table + "\n")
        plot_return_vs_eps(rows, out / "return_vs_eps.png")
        (out / "section.md").write_text("\n".join([
            "## Robustness to observation attacks (`digr attack`)", "",
            f"ℓ∞ attacks on the image (side inputs untouched), ε in [0, 1] pixel units (k/255 = k uint8 levels); attacked frames are "
            f"rounded to uint8. Closed loop: {episodes} full episodes per cell (seeds {cfg.evaluate.seed}…), every observation "
            f"attacked, greedy actions; ± = 95 % CI. Open loop: {n} held-out states, action-flip rate and KL(π(s) ‖ π(s')).", "",
            table, "", "![Return vs ε](attack/return_vs_eps.png)", "", "*Return under attack against the budget ε.*", ""]))
        report = refresh_report(self.path)
        console.log(f"attack: table in {out / 'table.md'}" + (f", report {report}" if report else ""))
        return out / "table.md"

    def run(self) -> Path:
        """All stages in order, skipping finished ones; returns the report path."""
        self.teacher()
        self.dataset()
        self.saliency()
        self.distill()
        report = self.evaluate()
        if self.cfg.saliency_bench.in_run:
            self.saliency_bench()
        return report

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
