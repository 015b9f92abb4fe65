"""`digr sweep`: real tiny MiniGrid trials on Ray Tune, locally and through a Ray head on 127.0.0.1; trials that share
a teacher config share one trained teacher; a rerun skips finished work; bad trials fail before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_integration import CONFIG, TINY

from digr.cli import main
from digr.errors import ConfigError
from digr.running.sweep import load_sweep, plan_trials

RAY = Path(sys.executable).with_name("ray")  # the venv's ray command, also where the venv is not activated
OVERRIDES = {TINY[i + 1].split("=", 1)[0]: yaml.safe_load(TINY[i + 1].split("=", 1)[1]) for i in range(0, len(TINY), 2)}
OVERRIDES |= {"saliency_bench.in_run": False, "distill.dagger_rounds": 0}


def _sweep_file(tmp_path, name, **fields):
    path = tmp_path / f"{name}.yaml"
    data = {"config": CONFIG, "name": name, "run_dir": str(tmp_path), "overrides": OVERRIDES, "cpus_per_trial": 1, **fields}
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_names_trials_validates_them_and_shares_teachers(tmp_path):
    sweep = load_sweep(_sweep_file(tmp_path, "p", grid={"seed": [0, 1], "distill.steps": [20, 30]},
                                   random={"distill.learning_rate": {"loguniform": [1e-4, 1e-3]}}, num_samples=2))  # fmt: skip
    trials = plan_trials(sweep)
    assert len(trials) == 8 and len({t.name for t in trials}) == 8 and trials[0].name.startswith("steps20_seed0_learning_rate")
    assert plan_trials(sweep) == trials  # the random draws come from sweep_seed: the plan reproduces
    teachers = {t.teacher_run for t in trials}
    assert len(teachers) == 2  # one teacher per seed, shared by its 4 student variants
    assert all(1e-4 <= t.overrides["distill.learning_rate"] <= 1e-3 for t in trials)
    with pytest.raises(ConfigError, match=r"trial steps-5: .*distill\.steps"):
        plan_trials(load_sweep(_sweep_file(tmp_path, "bad", grid={"distill.steps": [-5]})))
    with pytest.raises(ConfigError, match="sweep field 'gird'"):
        load_sweep(_sweep_file(tmp_path, "typo", gird={"seed": [0]}))


@pytest.mark.integration
def test_sweep_runs_locally_shares_a_teacher_and_skips_finished_trials(tmp_path, capsys):
    attack = {"attack.attacks": ["fgsm"], "attack.eps": ["3/255"], "attack.episodes": 2, "attack.open_loop_frames": 4,
              "attack.agents": ["digr"]}  # fmt: skip
    path = _sweep_file(tmp_path, "local", grid={"distill.steps": [20, 30]}, attack=True, overrides=OVERRIDES | attack)
    assert main(["sweep", str(path)]) == 0
    folder = tmp_path / "local"
    for steps in (20, 30):
        m = json.loads((folder / f"steps{steps}" / "metrics.json").read_text())
        assert set(m["students"]) == {"plain", "igr_all", "digr"}
        rows = json.loads((folder / f"steps{steps}" / "attack" / "results.json").read_text())["rows"]
        assert [(r["agent"], r["attack"], r["eps_label"]) for r in rows] == [("digr", "fgsm", "3/255")]
    assert len(list((folder / "_teachers").glob("teacher*/teacher/teacher.safetensors"))) == 1  # trained once
    record = json.loads((folder / "sweep.json").read_text())
    assert [t["error"] for t in record["trials"]] == [None, None]
    student = folder / "steps20" / "students" / "digr.safetensors"
    before = student.stat().st_mtime_ns
    assert main(["sweep", str(path)]) == 0  # a rerun skips what is finished
    assert student.stat().st_mtime_ns == before
    assert main(["summarize", str(folder), "--reps", "50"]) == 0
    summary = (folder / "summary.md").read_text()
    assert "distill.steps=20" in summary and "| return under fgsm 3/255 | " in summary  # attack cells over the trials


@pytest.mark.integration
def test_a_failing_trial_is_retried_then_reported_and_the_others_finish(tmp_path, capsys):
    grid = {"teacher.pretrained": [str(tmp_path / "no_teacher"), None]}  # valid configs; the first has no teacher
    path = _sweep_file(tmp_path, "fail", grid=grid, max_retries=1)
    assert main(["sweep", str(path)]) == 1
    trials = {t["name"]: t for t in json.loads((tmp_path / "fail" / "sweep.json").read_text())["trials"]}
    failed = next(t for n, t in trials.items() if n.startswith("pretrained") and "no_teacher" in n)
    assert failed["error"] and trials["pretrainedNone"]["error"] is None
    assert (tmp_path / "fail" / "pretrainedNone" / "metrics.json").is_file()
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.skipif(not RAY.is_file(), reason="the ray command is not installed beside this python")
def test_sweep_through_a_ray_head_on_this_machine(tmp_path):
    """The head runs in its own process group and only that group is stopped afterwards (`ray stop` would stop every
    Ray on the machine, a user's own cluster or sweep included)."""
    port, temp = "6391", tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", "--block", f"--temp-dir={temp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(RAY), "status", f"--address=127.0.0.1:{port}"], capture_output=True).returncode:
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        assert (
            main(["sweep", str(_sweep_file(tmp_path, "cluster", grid={"seed": [0, 1]})), "--address", f"127.0.0.1:{port}"])
            == 0
        )
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert all((tmp_path / "cluster" / f"seed{s}" / "metrics.json").is_file() for s in (0, 1))
    assert not (tmp_path / "cluster" / "_teachers").exists()  # different seeds: each trial trains its own teacher


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].joinpath("experiments", "sweeps").glob("*.yaml")))
def test_committed_sweeps_plan(path):
    assert plan_trials(load_sweep(path))  # every trial's config is valid
