"""`digr summarize`: runs found and grouped by variant, rliable's IQM, CIs and probability of improvement read off
known per-run scores, clear errors for missing, corrupt and double-counted runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from digr.cli import main
from digr.errors import ConfigError, DigrError
from digr.evaluation.aggregate import find_runs, group_variants, summarize_variant


def _run(folder, seed, returns, lam=0.01, spearman=None):
    """A run folder as `digr evaluate` leaves it (the fields the summary reads), with the given mean returns."""
    folder.mkdir(parents=True)
    cfg = {"name": folder.name, "seed": seed, "run_dir": str(folder.parent), "distill": {"lam": lam, "steps": 10}}
    (folder / "config.yml").write_text(yaml.safe_dump(cfg))

    def rollout(r):
        return {"rollout": {"return_mean": r, "success_rate": float("nan"), "episodes": 3}}

    metrics = {"teacher": rollout(returns.pop("teacher")), "students": {}, "maps": {}}
    for name, r in returns.items():
        metrics["students"][name] = {**rollout(r), "action_agreement": 0.5}
    if spearman is not None:
        metrics["maps"] = {f"{k} gradient": {"spearman": {"mean": v, "ci95": 0.0, "n": 8}} for k, v in spearman.items()}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _sweep(tmp_path):
    digr = [1.0, 2.0, 3.0, 4.0, 100.0]  # IQM (trim 25 % each side of 5 runs: one) = mean(2, 3, 4) = 3
    for seed, r in enumerate(digr):
        _run(tmp_path / "sweep" / f"s{seed}", seed, {"teacher": 10.0, "plain": 0.0, "igr_all": r, "digr": r},
             spearman={"digr": 0.5 + seed, "plain": 0.1})  # fmt: skip
    return tmp_path / "sweep"


def test_iqm_ci_and_probability_of_improvement_from_known_scores(tmp_path):
    runs = find_runs([_sweep(tmp_path)])
    (label, members), = group_variants(runs).items()  # fmt: skip
    assert label == "all runs" and [r.seed for r in members] == [0, 1, 2, 3, 4]
    s = summarize_variant(label, members, reps=500)
    digr = s.estimates["return"]["digr"]
    assert digr.iqm == pytest.approx(3.0) and digr.mean == pytest.approx(22.0) and digr.n == 5
    assert digr.lo <= digr.iqm <= digr.hi and digr.lo >= 1.0 and digr.hi <= 100.0
    teacher = s.estimates["return"]["teacher"]
    assert teacher.iqm == teacher.lo == teacher.hi == 10.0  # every run the same: a zero-width interval
    imps = {(i.x, i.y): i for i in s.improvements["return"]}
    assert imps[("digr", "plain")].p == 1.0 and imps[("digr", "plain")].lo == 1.0  # DIGR ahead in every pair of runs
    assert imps[("digr", "igr_all")].p == 0.5  # identical scores: no improvement either way
    (sal,) = s.improvements["saliency spearman"]  # maps follow the students: digr gradient vs plain gradient
    assert (sal.x, sal.y, sal.p) == ("digr gradient", "plain gradient", 1.0)
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    again = summarize_variant(label, members, reps=500)  # the bootstrap is seeded: a summary reproduces exactly
    assert again.estimates["return"]["digr"] == digr
    assert np.random.rand() == expected  # and the caller's global numpy generator is left where it was


def test_variants_are_labelled_by_the_fields_that_differ_and_seeds_count_once(tmp_path):
    for lam in (0.01, 0.1):
        for seed in (0, 1):
            _run(tmp_path / f"lam{lam}_s{seed}", seed, {"teacher": 1.0, "digr": lam}, lam=lam)
    variants = group_variants(find_runs([tmp_path]))
    assert sorted(variants) == ["distill.lam=0.01", "distill.lam=0.1"]
    assert all(len(v) == 2 for v in variants.values())
    _run(tmp_path / "again", 1, {"teacher": 1.0, "digr": 0.1}, lam=0.1)  # a second seed-1 run of the same variant
    with pytest.raises(DigrError, match="same seed 1"):
        group_variants(find_runs([tmp_path]))


def test_missing_and_corrupt_runs_are_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="digr run"):
        find_runs([tmp_path])
    with pytest.raises(ConfigError, match="no such folder"):
        find_runs([tmp_path / "nowhere"])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "metrics.json").write_text("{}")  # a copy without config.yml is not a run
    with pytest.raises(ConfigError, match="no finished runs"):
        find_runs([tmp_path])
    run = _run(tmp_path / "r", 0, {"teacher": 1.0})
    (run / "metrics.json").write_text('{"teacher": ')
    with pytest.raises(DigrError, match=r"metrics\.json"):
        find_runs([tmp_path])


def test_cli_writes_the_summary_and_rejects_bad_pairs(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    assert main(["summarize", str(sweep), "--reps", "200"]) == 0
    md = (sweep / "summary.md").read_text()
    assert "| return | 3.0 [" in md and "| return | digr | plain | 1.00 [1.00, 1.00] | 5 / 5 |" in md
    data = json.loads((sweep / "summary.json").read_text())
    assert data["variants"][0]["estimates"]["return"]["digr"]["scores"] == [1.0, 2.0, 3.0, 4.0, 100.0]
    assert (sweep / "summary_returns.png").stat().st_size > 0
    assert main(["summarize", str(sweep), "--compare", "digr"]) == 2
    assert "X:Y pairs" in capsys.readouterr().err
    assert main(["summarize", str(tmp_path / "empty")]) == 2
