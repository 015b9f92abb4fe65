"""``digr sweep SWEEP.yaml``: a grid (and random draws) over seeds and config fields, each trial a resumable
``digr run`` in its own run folder, executed by Ray Tune on this machine or on a cluster (``--address``).

A sweep file::

    config: experiments/minigrid_fetch.yaml   # the experiment every trial starts from
    name: minigrid_seeds                      # the sweep folder: <run_dir>/<name>
    run_dir: runs/sweeps                      # default
    overrides: {evaluate.episodes: 50}        # applied to every trial (dotted config fields)
    grid: {seed: [0, 1, 2, 3, 4]}             # every combination is a trial
    random: {distill.lam: {loguniform: [1.0e-4, 1.0e-1]}}   # optional: num_samples draws per grid point
    num_samples: 1
    max_retries: 1                            # a failed trial is retried at most this often, then reported
    cpus_per_trial: 2                         # Ray resources per trial; also its torch threads
    attack: false                             # true: each trial then runs `digr attack` (the config's attack grid)

Trials are fixed before anything runs (random draws come from ``sweep_seed``), named by their values, and validated
as configs first, so a bad field fails at once. Trials whose teacher config is the same (same ``seed``, ``env.*``,
``teacher.*``, ``device``; no committed teacher) share one teacher, trained once in ``<sweep>/_teachers/`` and
installed into each trial with ``teacher.pretrained``. A rerun skips what is finished (``digr run`` skips finished
stages; a trial whose config changed is refused by it and reported failed). ``digr summarize <sweep>`` then writes the
over-seeds tables (with ``attack: true``, the attack cells too: return under each attack and ε over seeds).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digr.checkpoint import write_bytes_atomic
from digr.errors import ConfigError, DigrError

__all__ = ["SweepConfig", "Trial", "load_sweep", "plan_trials", "run_sweep"]

#: Config fields that decide the teacher: trials equal in these share one trained teacher.
TEACHER_FIELDS = ("seed", "env", "teacher", "device")


class SweepConfig(BaseModel):
    """A validated sweep file (module docstring). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    config: str = Field(description="experiment YAML every trial starts from")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="sweep folder name under run_dir")
    run_dir: str = "runs/sweeps"
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted config fields set in every trial")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="field -> values; every combination runs")
    random: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="field -> {choice: [...]} | {uniform: [lo, hi]} | {loguniform: [lo, hi]}"
    )
    num_samples: int = Field(1, ge=1, description="random draws per grid point (with `random`)")
    sweep_seed: int = Field(0, description="seed of the random draws")
    max_retries: int = Field(1, ge=0, description="retries of a failed trial before it is reported")
    cpus_per_trial: float = Field(2, gt=0, description="Ray CPUs per trial; also its torch threads (rounded up)")
    attack: bool = Field(
        False,
        description="after `digr run`, each trial runs `digr attack` with its config's attack section (attack.attacks × "
        "attack.eps; set attack.* in overrides); finished cells are reused on a rerun",
    )

    @property
    def folder(self) -> Path:
        """The sweep folder ``run_dir/name``."""
        return Path(self.run_dir) / self.name


@dataclass(frozen=True)
class Trial:
    """One trial: ``name`` (its run folder under the sweep folder) and ``overrides`` (dotted field -> value, the sweep's
    and its own); ``teacher_run``: the shared teacher it installs (``<sweep>/_teachers/<teacher_run>/teacher``), or
    ``None`` when it trains or installs its own."""

    name: str
    overrides: dict[str, Any]
    teacher_run: str | None = None

    def override_items(self) -> list[str]:
        """The overrides as ``key=value`` items of ``-o`` (values as YAML flow), as :func:`load_config` takes them."""
        return [f"{k}={_yaml(v)}" for k, v in self.overrides.items()]

    def command_args(self, run_dir: Path, name: str, teachers: Path | None = None) -> list[str]:
        """``-o`` arguments of ``digr run``/``digr teacher`` in ``run_dir/name``; with ``teachers`` (the sweep's
        ``_teachers`` folder) the shared teacher is installed."""
        items = [f"run_dir={run_dir}", f"name={name}", *self.override_items()]
        if teachers is not None and self.teacher_run:
            items.append(f"teacher.pretrained={teachers / self.teacher_run / 'teacher'}")
        return [arg for item in items for arg in ("-o", item)]


def _yaml(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file.

    :raises FileNotFoundError: no such file. :raises ConfigError: bad YAML or an unknown/invalid field (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {str(path)!r} not found; see experiments/sweeps/ for examples")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return SweepConfig.model_validate(data)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: sweep field {where!r}: {err['msg']}") from None


def _draw(spec: dict[str, list[Any]], rng: np.random.Generator, name: str) -> Any:
    if len(spec) != 1:
        raise ConfigError(f"random.{name}: give exactly one of choice, uniform, loguniform, got {sorted(spec)}")
    (kind, args), = spec.items()  # fmt: skip
    if kind == "choice" and args:
        return args[int(rng.integers(len(args)))]
    if kind == "uniform" and len(args) == 2 and float(args[0]) < float(args[1]):
        return float(rng.uniform(float(args[0]), float(args[1])))
    if kind == "loguniform" and len(args) == 2 and 0 < float(args[0]) < float(args[1]):
        return float(np.exp(rng.uniform(np.log(float(args[0])), np.log(float(args[1])))))
    raise ConfigError(f"random.{name}: {kind} {args!r} is not a valid range (choice: a list; uniform/loguniform: [lo, hi])")


def _slug(k: str, v: Any) -> str:
    value = f"{v:.3g}" if isinstance(v, float) else str(v)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{k.split('.')[-1]}{value}")


def plan_trials(sweep: SweepConfig) -> list[Trial]:
    """The sweep's trials in a fixed order, each config validated, and shared teachers assigned.

    :raises ConfigError: an invalid field in the sweep or in any trial's resolved config (named with the trial),
        or two trials with the same name.
    """
    from digr.running.config import load_config

    rng = np.random.default_rng(sweep.sweep_seed)
    keys = list(sweep.grid)
    points = list(itertools.product(*(sweep.grid[k] for k in keys))) or [()]
    trials: list[Trial] = []
    for point in points:
        for _ in range(sweep.num_samples if sweep.random else 1):
            own = dict(zip(keys, point)) | {k: _draw(s, rng, k) for k, s in sweep.random.items()}
            name = "_".join(_slug(k, v) for k, v in own.items()) or "trial"
            trials.append(Trial(name, {**sweep.overrides, **own}))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ConfigError("two trials got the same name (a random draw repeated a value?); widen the range or drop it")
    resolved = []
    for t in trials:
        try:
            resolved.append(load_config(sweep.config, t.override_items()))
        except ConfigError as e:
            raise ConfigError(f"trial {t.name}: {e}") from None
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(resolved):
        if cfg.teacher.pretrained or cfg.teacher.sb3_zip:
            continue
        dump = cfg.model_dump(mode="json")
        key = json.dumps({f: dump.get(f) for f in TEACHER_FIELDS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    for n, members in enumerate(g for g in groups.values() if len(g) > 1):
        for i in members:
            trials[i] = dataclasses.replace(trials[i], teacher_run=f"teacher{n}")
    return trials


def _digr(command: str, config: str, args: list[str], cpus: float, cwd: str) -> None:
    """Run one ``digr`` command in a subprocess with ``ceil(cpus)`` torch threads. :raises RuntimeError: it failed
    (the message ends with its last output lines, so Ray's failure report shows why)."""
    threads = str(max(1, int(np.ceil(cpus))))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run([sys.executable, "-m", "digr.cli", command, config, *args], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"digr {command} exited with {proc.returncode}:\n{tail}")


def _trial(commands: list[str], config: str, args: list[str], cpus: float, cwd: str) -> None:
    """Run the ``digr`` commands of one trial in order (``run``, then ``attack`` with ``attack: true``). :raises
    RuntimeError: see :func:`_digr` (a later command does not run after a failed one)."""
    for command in commands:
        _digr(command, config, args, cpus, cwd)


def _tune(fn, specs: list[dict], sweep: SweepConfig, stage: str) -> dict[str, str | None]:
    """Run ``fn(spec)`` for every spec as a Ray Tune trial; returns name -> None (done) or the error (after retries)."""
    from ray import tune

    if not specs:
        return {}
    trainable = tune.with_resources(fn, {"cpu": sweep.cpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space={"spec": tune.grid_search(specs)},
        run_config=tune.RunConfig(
            name=stage,
            storage_path=str((sweep.folder / "_ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=sweep.max_retries),
            verbose=1,
        ),
    )
    results = tuner.fit()
    return {r.config["spec"]["name"]: (str(r.error).strip().splitlines()[-1] if r.error else None) for r in results}


def run_sweep(sweep: SweepConfig, address: str | None = None, log=print) -> dict[str, str | None]:
    """Plan the trials, train shared teachers, run every trial (Ray Tune), write ``<sweep>/sweep.json``.

    :param address: a Ray cluster (``ray start --head`` prints it); ``None`` starts a Ray instance on this machine's
        cores and stops it at the end.
    :returns: trial name -> ``None`` if it finished, else the last line of its error (after ``max_retries``).
    :raises ConfigError: see :func:`plan_trials`. :raises DigrError: no Ray cluster answers at ``address``.
    """
    import ray

    trials = plan_trials(sweep)
    folder = sweep.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cwd, config = os.getcwd(), str(Path(sweep.config).resolve())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except ConnectionError as e:
        raise DigrError(f"no Ray cluster answers at {address} ({e}); start one there with `ray start --head`") from e
    teachers = folder / "_teachers"
    try:
        shared = {t.teacher_run: t for t in trials if t.teacher_run}  # one trial stands for each shared teacher
        teacher_errors: dict[str, str | None] = {}
        if shared:
            log(f"sweep: {len(shared)} shared teacher(s) for {sum(bool(t.teacher_run) for t in trials)} trials")
            specs = [{"name": n, "args": t.command_args(teachers, n)} for n, t in shared.items()]
            teacher_errors = _tune(lambda c: _digr("teacher", config, c["spec"]["args"], sweep.cpus_per_trial, cwd),
                                   specs, sweep, "teachers")  # fmt: skip
        status = {t.name: f"its shared teacher {t.teacher_run} failed" for t in trials if teacher_errors.get(t.teacher_run)}
        runnable = [t for t in trials if t.name not in status]
        log(f"sweep: {len(runnable)} trial(s) in {folder}")
        specs = [{"name": t.name, "args": t.command_args(folder, t.name, teachers)} for t in runnable]
        commands = ["run", "attack"] if sweep.attack else ["run"]
        status |= _tune(
            lambda c: _trial(commands, config, c["spec"]["args"], sweep.cpus_per_trial, cwd), specs, sweep, "trials"
        )
    finally:
        ray.shutdown()
    rows = [{"name": t.name, "overrides": t.overrides, "error": status.get(t.name),
             "teacher": str(teachers / t.teacher_run / "teacher") if t.teacher_run else None} for t in trials]  # fmt: skip
    record = {"sweep": sweep.model_dump(), "trials": rows}
    write_bytes_atomic(folder / "sweep.json", json.dumps(record, indent=1, default=str).encode())
    return {t.name: status.get(t.name) for t in trials}
