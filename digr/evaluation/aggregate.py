"""Aggregate finished runs over seeds with rliable: interquartile mean, stratified-bootstrap CIs, probability of
improvement.

Method: Agarwal, Schwarzer, Castro, Courville & Bellemare, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS 2021 (arXiv 2108.13264): the interquartile mean (IQM, the mean of the middle 50 % of run scores;
§4.3), percentile confidence intervals from a bootstrap stratified over tasks (§3, A.1), and the probability of
improvement P(X > Y), the Mann–Whitney U statistic divided by n_X · n_Y (§4.3). The statistics are rliable's own
(``rliable.metrics``, ``rliable.library.get_interval_estimates``); this module finds the runs, groups them into
variants that differ only by seed, and reads each run's scores.

A *run* is a folder written by ``digr run`` / ``digr evaluate``: ``config.yml`` and ``metrics.json`` (and, after
``digr attack``, ``attack/results.json``). Its *scores* are one number per (metric, agent) for the whole run, e.g. the
mean greedy return over its evaluation episodes: rliable's unit is the run (seed), not the episode.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from digr.errors import ConfigError, DigrError
from digr.evaluation.attack_cells import eps_label
from digr.evaluation.independent import LOWER_IS_BETTER

__all__ = [
    "CROSS_TEACHER_FILE",
    "Estimate",
    "Improvement",
    "RunRecord",
    "VariantSummary",
    "find_runs",
    "group_variants",
    "lower_is_better",
    "run_scores",
    "summarize_variant",
]

#: A run folder's agreement with another seed's teacher (written by :mod:`digr.running.cross_teacher`).
CROSS_TEACHER_FILE = "cross_teacher.json"

#: Config fields that do not make a variant: runs that differ only in these are seeds of one variant.
PER_RUN_FIELDS = ("seed", "name", "run_dir")


@dataclass(frozen=True)
class RunRecord:
    """One finished run. ``config``: the resolved config as written to ``config.yml`` (plain dict); ``metrics``:
    ``metrics.json``; ``attack``: ``attack/results.json`` or ``None``; ``cross_teacher``: ``cross_teacher.json``
    (:mod:`digr.running.cross_teacher`) or ``None``."""

    path: Path
    config: dict
    metrics: dict
    attack: dict | None = None
    cross_teacher: dict | None = None

    @property
    def seed(self) -> int:
        """The run's ``seed`` field (an int)."""
        return int(self.config.get("seed", 0))


@dataclass(frozen=True)
class Estimate:
    """Aggregate of one (metric, agent) over the runs of a variant.

    ``iqm``: interquartile mean of the per-run scores (``scipy.stats.trim_mean(·, 0.25)``, as rliable); ``lo``, ``hi``:
    its stratified-bootstrap percentile CI (``ci`` coverage, 0.95 by default); with one run the interval is that run's
    score and says nothing. ``mean``: plain mean. ``scores``: the per-run scores in run order. Units are the metric's.
    """

    iqm: float
    lo: float
    hi: float
    mean: float
    scores: tuple[float, ...]

    @property
    def n(self) -> int:
        """Number of runs (seeds) behind the estimate."""
        return len(self.scores)


@dataclass(frozen=True)
class Improvement:
    """P(X > Y) for one metric (Agarwal et al. 2021 §4.3), read as P(X better than Y) (for a metric where
    :func:`lower_is_better`, P(X < Y)): ``p`` in [0, 1] (0.5 = no difference), ``lo``/``hi`` its
    stratified-bootstrap CI over runs; ``n_x``, ``n_y`` runs of each agent."""

    x: str
    y: str
    p: float
    lo: float
    hi: float
    n_x: int
    n_y: int


@dataclass
class VariantSummary:
    """Everything :func:`summarize_variant` finds for one variant: ``label`` (the config fields that set it apart,
    ``"all runs"`` if there is one variant), ``runs`` (their folders), ``estimates[metric][agent]`` and
    ``improvements[metric]``."""

    label: str
    runs: list[Path]
    seeds: list[int]
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    improvements: dict[str, list[Improvement]] = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DigrError(f"{path}: cannot read it as JSON ({e}); rerun the stage that writes it (`digr evaluate` or "
                        f"`digr attack`) or remove the run folder from the summary") from e  # fmt: skip


def find_runs(roots: Iterable[str | Path]) -> list[RunRecord]:
    """Every finished run under ``roots`` (folders searched recursively; a run folder itself is accepted).

    A folder counts as a run when it holds both ``metrics.json`` and ``config.yml``; other ``metrics.json`` files
    (copies in ``docs/``) are ignored.

    :raises ConfigError: a root does not exist, or no run is found under any root (the message says how runs are made).
    :raises DigrError: a run's ``metrics.json``, ``config.yml`` or ``attack/results.json`` is corrupt.
    """
    found: list[RunRecord] = []
    for root in map(Path, roots):
        if not root.exists():
            raise ConfigError(f"{root}: no such folder; give a sweep folder or run folders written by `digr run`")
        for metrics in sorted(root.rglob("metrics.json")):
            folder = metrics.parent
            if not (folder / "config.yml").is_file():
                continue
            try:
                config = yaml.safe_load((folder / "config.yml").read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise DigrError(f"{folder / 'config.yml'}: not readable YAML ({e}); the run folder is damaged") from e
            attack, cross = folder / "attack" / "results.json", folder / CROSS_TEACHER_FILE
            found.append(RunRecord(folder, config, _read_json(metrics), _read_json(attack) if attack.is_file() else None,
                                   _read_json(cross) if cross.is_file() else None))  # fmt: skip
    if not found:
        names = ", ".join(str(r) for r in roots)
        raise ConfigError(
            f"no finished runs under {names}: a run folder holds metrics.json and config.yml, written by "
            "`digr run CONFIG` (or `digr evaluate`); run it first, e.g. once per seed with -o seed=N"
        )
    return found


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value


def group_variants(
    runs: Sequence[RunRecord], ignore: Sequence[str] = (), normalize: Callable[[dict], dict] | None = None
) -> dict[str, list[RunRecord]]:
    """Group runs whose configs are equal except for :data:`PER_RUN_FIELDS` (seed, name, run folder) and the fields
    under the dotted prefixes in ``ignore`` (e.g. ``saliency_bench`` for runs that did not run the bench). ``normalize``
    maps each config before the comparison (the CLI fills in today's defaults, so runs from older code that mean the
    same experiment join their variant).

    Each group is labelled by the fields in which the groups differ, e.g. ``"distill.students=[...], env.id=MiniGrid…"``
    (``"all runs"`` when there is one group). Runs within a group are sorted by seed.

    :raises DigrError: two runs of one variant have the same seed (they would count twice); the message names both
        folders, remove one of them from the summary.
    """
    skip = lambda k: k in PER_RUN_FIELDS or any(k == p or k.startswith(p + ".") for p in ignore)
    flat = [{k: v for k, v in _flatten(normalize(r.config) if normalize else r.config).items() if not skip(k)} for r in runs]
    keys = [json.dumps(f, sort_keys=True, default=str) for f in flat]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    distinct = sorted({f for fl in flat for f in fl if len({_short(x.get(f)) for x in flat}) > 1})
    out: dict[str, list[RunRecord]] = {}
    for members in groups.values():
        first = flat[members[0]]
        label = ", ".join(f"{f}={_short(first.get(f))}" for f in distinct) or "all runs"
        chosen = sorted((runs[i] for i in members), key=lambda r: r.seed)
        for a, b in itertools.pairwise(chosen):
            if a.seed == b.seed:
                raise DigrError(f"{a.path} and {b.path} are the same variant with the same seed {a.seed}: they would "
                                "count twice; summarize one of them (give the run folders explicitly)")  # fmt: skip
        out[label] = chosen
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def lower_is_better(metric: str) -> bool:
    """Whether a lower score is the better one for a metric of :func:`run_scores` (``saliency deletion_auc``)."""
    return metric.removeprefix("saliency ") in LOWER_IS_BETTER


def run_scores(run: RunRecord) -> dict[tuple[str, str], float]:
    """One score per (metric, agent) of one run; higher is better for every metric except those where
    :func:`lower_is_better` says otherwise (deletion AUC).

    - ``return``: mean greedy return over the run's evaluation episodes (env reward units), and ``return, <label>``
      under the second protocol where the run has one (``evaluate.compare_label``); ``success rate`` in [0, 1]
      where the env defines success; ``action agreement`` with the teacher on held-out states, in [0, 1] (students);
    - ``saliency <stat>`` for every map of the report (agent = map name, e.g. ``"digr gradient"``): Spearman ρ, top-k %
      IoU with the teacher's perturbation map, mass inside and pointing game on the env's ground-truth masks, and the
      mask-independent statistics of :mod:`digr.evaluation.independent` (occlusion agreement, deletion/insertion) and
      of :mod:`digr.running.cross_teacher` (agreement with another seed's teacher) where the run has them;
    - ``return under <attack> <ε>``: closed-loop mean return under ``digr attack`` cells, when the run has them.
    """
    m = run.metrics
    scores: dict[tuple[str, str], float] = {}
    agents = {"teacher": m.get("teacher", {}), **m.get("students", {})}
    for agent, rec in agents.items():
        rollout = rec.get("rollout", {})
        if _finite(rollout.get("return_mean")):
            scores[("return", agent)] = float(rollout["return_mean"])
        if _finite(rollout.get("success_rate")):
            scores[("success rate", agent)] = float(rollout["success_rate"])
        compare = rec.get("rollout_compare", {})
        if _finite(compare.get("return_mean")):
            label = run.config.get("evaluate", {}).get("compare_label", "second protocol")
            scores[(f"return, {label}", agent)] = float(compare["return_mean"])
        if _finite(rec.get("action_agreement")):
            scores[("action agreement", agent)] = float(rec["action_agreement"])
    for map_name, stats in m.get("maps", {}).items():
        for stat, v in stats.items():
            if isinstance(v, dict) and _finite(v.get("mean")):
                scores[(f"saliency {stat}", map_name)] = float(v["mean"])
    for map_name, stats in (run.cross_teacher or {}).get("maps", {}).items():
        for stat, v in stats.items():
            if isinstance(v, dict) and _finite(v.get("mean")):
                scores[(f"saliency {stat}", map_name)] = float(v["mean"])
    for row in (run.attack or {}).get("rows", []):
        closed = row.get("closed_loop") or {}
        if _finite(closed.get("return_mean")):
            scores[(f"return under {row['attack']} {eps_label(row)}", row["agent"])] = float(closed["return_mean"])
    return scores


def _bootstrap(score_dict: dict[str, object], func, reps: int, ci: float, seed: int):
    """rliable's stratified bootstrap, reproducible: rliable 1.2 draws its resampling indices from numpy's global
    generator (``np.random.choice``), not from the ``random_state`` it passes to arch, so the global generator is seeded
    here and restored afterwards (the caller's numpy random state is left as it was)."""
    import warnings

    from rliable import library as rly

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable hands it
            warnings.simplefilter("ignore", FutureWarning)
            return rly.get_interval_estimates(
                score_dict, func, reps=reps, confidence_interval_size=ci, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(state)


def _counterpart(agent: str, student: str, other: str) -> str | None:
    """``"digr gradient"`` → ``"plain gradient"`` for the comparison digr:plain; ``"digr"`` → ``"plain"``."""
    if agent == student:
        return other
    if agent.startswith(student + " "):
        return other + agent[len(student) :]
    return None


def summarize_variant(
    label: str,
    runs: Sequence[RunRecord],
    compare: Sequence[tuple[str, str]] = (("digr", "plain"), ("digr", "igr_all")),
    reps: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> VariantSummary:
    """IQM with a stratified-bootstrap CI for every (metric, agent) over the variant's runs, and P(X > Y) with its CI
    for every metric and every pair in ``compare`` (student names; maps follow: ``digr gradient`` vs
    ``plain gradient``). One task per variant: the bootstrap resamples runs (seeds).

    :param reps: bootstrap replications (rliable's default is 50,000; 2,000 keeps a summary within seconds).
    :param ci: coverage in (0, 1). :param seed: of the bootstrap's random state, so a summary reproduces exactly.
    :raises ConfigError: ``reps`` < 1 or ``ci`` outside (0, 1).
    """
    from rliable import metrics as rlm

    if reps < 1 or not 0.0 < ci < 1.0:
        raise ConfigError(f"reps must be >= 1 and ci in (0, 1), got reps={reps}, ci={ci}")
    per_run = [run_scores(r) for r in runs]
    keys = sorted({k for s in per_run for k in s})
    out = VariantSummary(label, [r.path for r in runs], [r.seed for r in runs])
    columns = {k: np.array([[s[k]] for s in per_run if k in s], dtype=np.float64) for k in keys}
    points, intervals = _bootstrap({repr(k): v for k, v in columns.items()},
                                   lambda x: np.array([rlm.aggregate_iqm(x)]), reps, ci, seed)  # fmt: skip
    for (metric, agent), x in columns.items():
        lo, hi = intervals[repr((metric, agent))][:, 0]
        est = Estimate(float(points[repr((metric, agent))][0]), float(lo), float(hi), float(x.mean()),
                       tuple(float(v) for v in x[:, 0]))  # fmt: skip
        out.estimates.setdefault(metric, {})[agent] = est
    pairs: dict[str, tuple[np.ndarray, np.ndarray, str, str, str]] = {}
    for (metric, agent), x in columns.items():
        for student, other in compare:
            y_agent = _counterpart(agent, student, other)
            if y_agent is not None and (metric, y_agent) in columns:
                sign = -1.0 if lower_is_better(metric) else 1.0  # P(X better than Y)
                pairs[repr((metric, agent, y_agent))] = (sign * x, sign * columns[(metric, y_agent)], metric, agent, y_agent)
    if pairs:
        poi = lambda x, y: np.array([rlm.probability_of_improvement(x, y)])
        points, intervals = _bootstrap({k: [v[0], v[1]] for k, v in pairs.items()}, poi, reps, ci, seed)
        for k, (x, y, metric, agent, y_agent) in pairs.items():
            lo, hi = intervals[k][:, 0]
            imp = Improvement(agent, y_agent, float(points[k][0]), float(lo), float(hi), len(x), len(y))
            out.improvements.setdefault(metric, []).append(imp)
    return out
