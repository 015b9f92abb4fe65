"""The run folder ``{run_dir}/{name}/``: the one object that knows where every artefact of a run lives.

No other module builds a run path from strings: stages ask a :class:`RunFolder` (and the teacher's
:class:`digr.policies.teacher.TeacherFolder`, which it holds). Layout::

    config.yml  run_info.json  metrics.json  report.md          the run's config, environment, metrics and report
    teacher/                                                    TeacherFolder: weights, spec, SB3 zip, curve, checkpoint/
    dataset_{train,heldout}.npz  teacher_saliency_{train,heldout}.npy    teacher states and their perturbation maps
    students/<name>.{safetensors,json,ckpt.pt,history.json}     each student: weights, spec, checkpoint, loss history
    students/<name>.dagger<r>.npz  students/<name>.dagger<r>.maps.npy   DAgger round r: states and teacher maps
    stages/<stage>[-<student>].json                             finished-stage markers (:mod:`digr.running.stages`)
    teacher_curve.png  saliency_grid.png  distill_curves.png   figures of the report
    saliency_bench/{results.json, table.md, quality_vs_cost.png}
    attack/{results.json, partial.json, table.md, return_vs_eps.png, *.superseded-<time>.json}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from digr.checkpoint import write_json_atomic
from digr.errors import StageError
from digr.evaluation.attack_cells import CellPlan, plan_cells
from digr.method.dataset import SPLITS
from digr.policies.teacher import TeacherFolder

__all__ = ["AttackFiles", "BenchFiles", "RunFolder", "StudentFiles"]


@dataclass(frozen=True)
class StudentFiles:
    """The files of one student in ``students/``."""

    dir: Path
    name: str

    @property
    def weights(self) -> Path:
        return self.dir / f"{self.name}.safetensors"

    @property
    def spec(self) -> Path:
        """The student's constructor spec (JSON), written beside its weights."""
        return self.dir / f"{self.name}.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / f"{self.name}.ckpt.pt"

    @property
    def history(self) -> Path:
        return self.dir / f"{self.name}.history.json"

    def fresh(self) -> StudentFiles:
        """These files, after removing the DAgger rounds of an earlier training when there is no checkpoint to resume
        (they were collected by another student, perhaps under another config, and must not be mixed in)."""
        if not self.checkpoint.is_file():
            for path in self.dir.glob(f"{self.name}.dagger*"):
                path.unlink()
        return self

    def dagger_states(self, round_: int) -> Path:
        """States of DAgger round ``round_`` (≥ 1)."""
        return self.dir / f"{self.name}.dagger{round_}.npz"

    def dagger_maps(self, round_: int) -> Path:
        """The teacher's perturbation maps of those states."""
        return self.dir / f"{self.name}.dagger{round_}.maps.npy"


@dataclass(frozen=True)
class BenchFiles:
    """``saliency_bench/``: results (JSON rows), markdown table, quality-vs-cost figure."""

    dir: Path

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def table(self) -> Path:
        return self.dir / "table.md"

    @property
    def figure(self) -> Path:
        return self.dir / "quality_vs_cost.png"


@dataclass(frozen=True)
class AttackFiles:
    """``attack/``: results of the last finished call, the cells of an interrupted one, table, figure."""

    dir: Path

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def partial(self) -> Path:
        return self.dir / "partial.json"

    @property
    def table(self) -> Path:
        return self.dir / "table.md"

    @property
    def figure(self) -> Path:
        return self.dir / "return_vs_eps.png"

    def read_rows(self, path: Path) -> list[dict]:
        """Rows of ``results.json`` or ``partial.json``; [] if the file is absent.

        :raises StageError: the file exists but is not valid JSON (it is left in place).
        """
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text()).get("rows", []))
        except (json.JSONDecodeError, AttributeError) as e:
            raise StageError(f"{path} is corrupt ({e}); move it away to start a new attack table") from e

    def set_aside(self, path: Path, stamp: str) -> Path:
        """Rename ``results.json``/``partial.json`` to ``<stem>.superseded-<stamp>.json`` (kept, out of the table)."""
        aside = self.dir / f"{path.stem}.superseded-{stamp}.json"
        os.replace(path, aside)
        return aside

    def start(self, protocol: dict[str, dict], stamp: str) -> CellPlan:
        """Begin an attack call: which earlier cells it may reuse (:func:`digr.evaluation.attack_cells.plan_cells`); a
        ``partial.json`` of other weights or another protocol is set aside at once (its cells are kept, out of the way).

        :raises StageError: a corrupt earlier results file.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        plan = plan_cells(self.read_rows(self.results), self.read_rows(self.partial), protocol)
        if plan.stale_partial:
            self.set_aside(self.partial, stamp)
        return plan

    def recorder(self, protocol: dict[str, dict]) -> Callable[[dict], None]:
        """``save(row)``: stamp a finished cell with its agent's protocol and rewrite ``partial.json`` with every cell of
        this call so far, so that an interrupted call resumes from them."""
        finished: list[dict] = []

        def save(row: dict) -> None:
            row["protocol"] = protocol[row["agent"]]
            finished.append(row)
            write_json_atomic(self.partial, {"rows": finished}, indent=1)

        return save

    def finish(self, plan: CellPlan, result: dict, stamp: str) -> Path | None:
        """End an attack call: set a stale ``results.json`` aside (returns where), write the new one, drop
        ``partial.json``."""
        aside = self.set_aside(self.results, stamp) if plan.stale_results else None
        write_json_atomic(self.results, result)
        self.partial.unlink(missing_ok=True)
        return aside


class RunFolder:
    """Paths of one run's artefacts (module docstring); the writers create folders as they need them. The attack files
    (:class:`AttackFiles`) also keep the bookkeeping of attack calls: which earlier cells a call reuses, the interrupted
    call's cells, stale files set aside.

    :param root: ``Path(run_dir) / name``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.teacher = TeacherFolder(self.root / "teacher")
        self.bench = BenchFiles(self.root / "saliency_bench")
        self.attack = AttackFiles(self.root / "attack")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    @property
    def config_yml(self) -> Path:
        """The run's resolved config (YAML)."""
        return self.root / "config.yml"

    @property
    def run_info(self) -> Path:
        """DIGR, Python and torch versions, the command and the thread count."""
        return self.root / "run_info.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def students_dir(self) -> Path:
        return self.root / "students"

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    def dataset(self, split: str) -> Path:
        """Teacher states of ``split`` (``train`` or ``heldout``)."""
        return self.root / f"dataset_{split}.npz"

    def teacher_maps(self, split: str) -> Path:
        """The teacher's perturbation maps of those states, float32 ``[N, H, W]``."""
        return self.root / f"teacher_saliency_{split}.npy"

    def student(self, name: str) -> StudentFiles:
        return StudentFiles(self.students_dir, name)

    def marker(self, stage: str, student: str | None = None) -> Path:
        """Finished-stage marker of ``stage`` (per student for ``distill``)."""
        return self.stages_dir / (f"{stage}-{student}.json" if student else f"{stage}.json")

    def artefacts(self, stage: str, student: str | None = None) -> list[Path]:
        """The files a finished ``stage`` must have left (a marker without them means the stage is redone)."""
        if stage == "teacher":
            return [self.teacher.weights, self.teacher.spec]
        if stage == "dataset":
            return [self.dataset(s) for s in SPLITS]
        if stage == "saliency":
            return [self.teacher_maps(s) for s in SPLITS]
        if stage == "distill":
            files = self.student(student)
            return [files.weights, files.spec, files.history]
        if stage == "evaluate":
            return [self.metrics]
        if stage == "saliency_bench":
            return [self.bench.results]
        raise ValueError(f"unknown stage {stage!r}")

    def checkpoint(self, stage: str, student: str | None = None) -> Path | None:
        """The resumable checkpoint of an unfinished ``stage`` (teacher, or a student for ``distill``), or None for
        stages that redo their work from the start."""
        if stage == "teacher":
            return self.teacher.checkpoint_state
        return self.student(student).checkpoint if stage == "distill" else None

    def figure(self, name: str) -> Path:
        """A report figure by name: ``teacher_curve``, ``saliency_grid`` or ``distill_curves``."""
        return self.root / f"{name}.png"

    def link(self, path: Path) -> str:
        """``path`` relative to the run folder, with ``/``: a link that works from ``report.md``."""
        return Path(path).relative_to(self.root).as_posix()
