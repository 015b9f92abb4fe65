"""Fault suite: real `digr` processes on MiniGrid at tiny budgets, killed, raced, starved of disk, given read-only
folders, corrupt files and non-finite settings. Each test states the promise it checks (README, "Resume and refusal").

Kill points are taken where the run folder shows a stage is under way (a checkpoint or file appearing), then SIGKILL:
the rerun must give exactly the uninterrupted run's results, teacher included.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml

from digr.checkpoint import write_bytes_atomic
from digr.cli import main
from digr.errors import DiskFullError
from digr.running.config import config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "minigrid_fetch.yaml")
TINY = [
    "env.kwargs={max_steps: 24}",
    "teacher.total_timesteps=1024",
    "teacher.n_envs=2",
    "teacher.n_steps=128",
    "teacher.batch_size=128",
    "teacher.checkpoint_every=256",
    "dataset.train_frames=48",
    "dataset.heldout_frames=16",
    "perturbation.stride=8",
    "distill.steps=30",
    "distill.batch_size=16",
    "distill.checkpoint_every=5",
    "distill.dagger_rounds=1",
    "distill.dagger_frames=8",
    "evaluate.episodes=2",
    "evaluate.latency_repeats=1",
    "evaluate.latency_batch=2",
    "evaluate.figure_frames=2",
]
ATTACK = ["--attacks", "fgsm,pgd10", "--eps", "1/255,3/255", "--episodes", "2", "--agents", "teacher,digr"]
STUDENTS = ("plain", "igr_all", "digr")

pytestmark = pytest.mark.integration


def _args(run_dir: Path, name: str, *extra: str) -> list[str]:
    out = [CONFIG, "-o", f"run_dir={run_dir}", "-o", f"name={name}"]
    for item in (*TINY, *extra):
        out += ["-o", item]
    return out


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "COLUMNS": "200"}


def _digr(command: str, run_dir: Path, name: str, *extra: str, flags=()) -> subprocess.CompletedProcess:
    """Run one `digr` command in its own process, as a user does."""
    cmd = [sys.executable, "-m", "digr.cli", command, *_args(run_dir, name, *extra), *flags]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)


def _spawn(command: str, run_dir: Path, name: str, *extra: str, flags=()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "digr.cli", command, *_args(run_dir, name, *extra), *flags]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fails if the process ended first (no kill would be tested)."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the process ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() - t0 < timeout, "kill point never reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _curve(run: Path) -> list[dict]:
    with (run / "teacher" / "curve.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "steps_per_sec"} for row in csv.DictReader(f)]


def _results(run: Path) -> dict:
    """Everything a run computed, without wall-clock timings: weights hashes, learning curve, dataset arrays, teacher
    maps, loss histories and metrics."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("latency")
    out = {"teacher": _sha(run / "teacher" / "teacher.safetensors"), "curve": _curve(run), "metrics": metrics}
    for split in ("train", "heldout"):
        with np.load(run / f"dataset_{split}.npz") as z:
            out[f"dataset_{split}"] = {k: hashlib.sha256(z[k].tobytes()).hexdigest() for k in sorted(z.files)}
        out[f"maps_{split}"] = _sha(run / f"teacher_saliency_{split}.npy")
    for s in STUDENTS:
        out[s] = _sha(run / "students" / f"{s}.safetensors")
        out[f"{s}_history"] = [
            {k: v for k, v in r.items() if k != "sec"}
            for r in json.loads((run / "students" / f"{s}.history.json").read_text())
        ]
    return out


def _snapshot(run: Path) -> dict:
    """Every file of a run folder with its bytes' hash and mtime (the lock file aside)."""
    return {
        str(p.relative_to(run)): (_sha(p), p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name not in (".lock", ".lock.json")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run and an attack on it: what every interrupted run must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference")
    done = _digr("run", run_dir, "ref")
    assert done.returncode == 0, done.stderr[-3000:]
    attacked = _digr("attack", run_dir, "ref", flags=ATTACK)
    assert attacked.returncode == 0, attacked.stderr[-3000:]
    return run_dir / "ref"


def _attack_rows(run: Path) -> list[dict]:
    rows = json.loads((run / "attack" / "results.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "sec", "ms", "seconds")} for r in rows]


@pytest.mark.slow
def test_sigkill_in_every_stage_then_rerun_gives_the_uninterrupted_results(tmp_path, reference):
    run = tmp_path / "k"
    kill_points = [
        ("teacher after its first checkpoint", lambda: (run / "teacher" / "checkpoint" / "state.pt").is_file()),
        ("teacher after a later checkpoint", lambda: len(_rows(run)) >= 3),
        ("dataset", lambda: (run / "dataset_train.npz").is_file()),
        ("distill, digr student mid-training", lambda: (run / "students" / "digr.ckpt.pt").is_file()),
        ("distill, digr student in its DAgger round", lambda: (run / "students" / "digr.dagger1.npz").is_file()),
    ]
    for _, ready in kill_points:
        _kill_when(_spawn("run", tmp_path, "k"), ready)
    done = _digr("run", tmp_path, "k")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _results(run) == _results(reference)
    assert not list(run.rglob("*.tmp"))  # a killed writer's temporary files are gone

    proc = _spawn("attack", tmp_path, "k", flags=ATTACK)
    _kill_when(proc, lambda: (run / "attack" / "partial.json").is_file())
    done = _digr("attack", tmp_path, "k", flags=ATTACK)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _attack_rows(run) == _attack_rows(reference)


def _rows(run: Path) -> list:
    try:
        return _curve(run)
    except (OSError, KeyError):
        return []


@pytest.mark.slow
def test_a_changed_config_after_a_kill_is_refused_with_every_field_and_writes_nothing(tmp_path):
    run = tmp_path / "c"
    _kill_when(_spawn("teacher", tmp_path, "c"), lambda: (run / "teacher" / "checkpoint" / "state.pt").is_file())
    before = _snapshot(run)
    refused = _digr("teacher", tmp_path, "c", "teacher.learning_rate=0.001", "teacher.ent_coef=0.02")
    assert refused.returncode == 2
    assert "teacher.learning_rate: 0.0005 → 0.001" in refused.stderr and "teacher.ent_coef: 0.01 → 0.02" in refused.stderr
    assert "state.pt" in refused.stderr and "Traceback" not in refused.stderr
    assert _snapshot(run) == before  # config.yml and run_info.json included

    # a student killed mid-training, then λ of that student changed: refused at its checkpoint
    _kill_when(_spawn("run", tmp_path, "c"), lambda: (run / "students" / "digr.ckpt.pt").is_file())
    students = config_to_dict(load_config(CONFIG))["distill"]["students"]
    changed = [{**s, "lam": 0.1} if s["name"] == "digr" else s for s in students]
    override = "distill.students=" + yaml.safe_dump(changed, default_flow_style=True).strip()
    before = _snapshot(run)
    refused = _digr("run", tmp_path, "c", override)
    assert refused.returncode == 2 and "student.lam: 0.01 → 0.1" in refused.stderr and "digr.ckpt.pt" in refused.stderr
    assert _snapshot(run) == before
    # a field the unfinished stages do not use does not block them: κ only matters to the selective student, which
    # is refused; the plain student finished before the kill and stays
    refused = _digr("run", tmp_path, "c", "mask.kappa=0.3")
    assert refused.returncode == 2 and "distill-plain" not in refused.stderr and "mask.kappa: 0.1 → 0.3" in refused.stderr


@pytest.mark.slow
def test_a_second_writer_is_refused_at_once_and_a_killed_writer_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "w"
    first = _spawn("teacher", tmp_path, "w", "teacher.total_timesteps=4096")
    t0 = time.monotonic()
    while not (run / ".lock.json").is_file():
        assert first.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.01)
    for command in ("run", "teacher", "evaluate"):
        second = _digr(command, tmp_path, "w", "teacher.total_timesteps=4096")
        assert second.returncode == 2, second.stderr
        assert f"run folder {run} is in use by" in second.stderr and "`digr teacher" in second.stderr
    assert first.poll() is None  # the holder was not disturbed
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = _digr("teacher", tmp_path, "w", "teacher.total_timesteps=4096")  # the OS released the lock
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [int(r["steps"]) for r in _curve(run)]
    assert steps == sorted(set(steps)) and steps[-1] == 4096  # one row per rollout, none doubled


def test_attack_calls_on_one_run_do_not_race(tmp_path, reference):
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    first = _spawn("attack", tmp_path, "ref", flags=["--attacks", "pgd10", "--eps", "5/255", "--episodes", "3"])
    t0 = time.monotonic()
    while not (run / ".lock.json").is_file():
        assert first.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.01)
    second = _digr("attack", tmp_path, "ref", flags=["--attacks", "random", "--eps", "1/255", "--episodes", "2"])
    assert second.returncode == 2 and "is in use by" in second.stderr
    assert first.wait() == 0
    rows = json.loads((run / "attack" / "results.json").read_text())["rows"]
    assert {(r["attack"], r["agent"]) for r in rows if r["attack"] == "pgd10" and r["eps"] == 5 / 255} == {
        ("pgd10", a) for a in ("teacher", *STUDENTS)
    }


def _userns() -> bool:
    """True where this process may make a private mount namespace (for a small tmpfs and a read-only mount)."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _in_private_mount(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run a bash ``script`` in a private mount namespace; ``$MNT`` is an empty folder, ``$DIGR`` the CLI."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**_env(), "MNT": str(mnt), "DIGR": f"{sys.executable} -m digr.cli", "CONFIG": CONFIG}
    env["TINY"] = " ".join(f"-o '{t}'" for t in TINY)
    return subprocess.run(["unshare", "-rm", "bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.skipif(not _userns(), reason="no user/mount namespaces here (the injected-ENOSPC test covers the writer)")
def test_a_full_disk_is_named_keeps_the_last_checkpoint_and_the_rerun_finishes_identically(tmp_path, reference):
    script = """
    set -u
    mount -t tmpfs -o size=20m tmpfs "$MNT"
    eval $DIGR teacher "$CONFIG" -o run_dir="$MNT" -o name=full $TINY; echo "rc=$?"
    python -c "import torch, sys; print('ckpt', torch.load(sys.argv[1], weights_only=True)['num_timesteps'])" \
        "$MNT/full/teacher/checkpoint/state.pt"
    find "$MNT" -name '*.tmp' | sed 's/^/tmp: /'
    mount -o remount,size=300m "$MNT"
    eval $DIGR teacher "$CONFIG" -o run_dir="$MNT" -o name=full $TINY; echo "rc=$?"
    sha256sum "$MNT/full/teacher/teacher.safetensors"
    """
    out = _in_private_mount(script.replace("python ", f"{sys.executable} "), tmp_path)
    text = out.stdout + out.stderr
    assert "rc=2" in text and "no space left on device while writing" in text and "state.pt" in text, text[-3000:]
    assert "Traceback" not in text and "tmp: " not in text
    assert "ckpt 256" in text  # the first checkpoint survived the failed second one, whole
    assert "rc=0" in text and _sha(reference / "teacher" / "teacher.safetensors") in text


def test_an_injected_enospc_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    write_bytes_atomic(target, b"complete checkpoint")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("digr.checkpoint.os.fsync", full)
    with pytest.raises(DiskFullError, match=rf"no space left on device while writing {target}"):
        write_bytes_atomic(target, b"x" * 1000)
    assert target.read_bytes() == b"complete checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


@pytest.mark.skipif(not _userns(), reason="no user/mount namespaces here")
def test_a_read_only_run_folder_is_refused_before_any_work(tmp_path, reference):
    script = f"""
    mount -t tmpfs -o size=300m tmpfs "$MNT"
    cp -r "{reference}" "$MNT/ref"
    mount -o remount,ro "$MNT"
    eval $DIGR evaluate "$CONFIG" -o run_dir="$MNT" -o name=ref $TINY; echo "rc=$?"
    eval $DIGR attack "$CONFIG" -o run_dir="$MNT" -o name=ref $TINY --episodes 1; echo "rc=$?"
    """
    out = _in_private_mount(script, tmp_path)
    text = out.stdout + out.stderr
    assert text.count("rc=2") == 2 and text.count("is not writable (Read-only file system)") == 2, text[-3000:]
    assert "evaluate:" not in text and "Traceback" not in text  # refused before any work


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("relative", "command"),
    [
        ("students/digr.safetensors", "evaluate"),
        ("students/digr.json", "evaluate"),
        ("teacher/teacher.safetensors", "evaluate"),
        ("dataset_heldout.npz", "evaluate"),
        ("teacher_saliency_train.npy", "run"),
        ("stages/teacher.json", "run"),
    ],
)
def test_a_corrupt_file_gets_advice_that_works(tmp_path, reference, capsys, relative, command):
    """A truncated file: a message naming it (no traceback); deleting it as told and rerunning restores the result."""
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    if relative == "teacher_saliency_train.npy":
        (run / "stages" / "distill-digr.json").unlink()  # the stage that reads the train maps runs again
        (run / "students" / "digr.ckpt.pt").unlink()
    _truncate(run / relative)
    assert main([command, *_args(tmp_path, "ref")]) == 2
    err = capsys.readouterr().err
    assert str(run / relative) in err and "delete it" in err
    (run / relative).unlink()
    assert main(["run", *_args(tmp_path, "ref")]) == 0
    assert _results(run) == _results(reference)


def test_any_command_refuses_a_config_its_run_was_not_made_with(tmp_path, reference, capsys):
    """`digr teacher` on a finished run with another κ: refused (the students were made with the old one), and
    config.yml still describes the run."""
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    before = _snapshot(run)
    assert main(["teacher", *_args(tmp_path, "ref", "mask.kappa=0.3")]) == 2
    assert "mask.kappa: 0.1 → 0.3" in capsys.readouterr().err
    assert _snapshot(run) == before
    (run / "metrics.json").write_text("{")  # a corrupt result file: named, not a traceback
    assert main(["evaluate", *_args(tmp_path, "ref")]) == 0  # a measurement with a missing/corrupt file is redone
    json.loads((run / "metrics.json").read_text())


def test_wrong_checkpoints_and_zips_are_named_not_tracebacks(tmp_path, reference, capsys):
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    # a student checkpoint with the wrong keys, on an unfinished student
    (run / "stages" / "distill-digr.json").unlink()
    th.save({"model": {"w": th.zeros(1)}}, run / "students" / "digr.ckpt.pt")
    assert main(["distill", *_args(tmp_path, "ref"), "--student", "digr"]) == 2
    err = capsys.readouterr().err
    assert "digr.ckpt.pt" in err and "missing" in err and "Traceback" not in err
    # the right keys, a tensor of the wrong shape
    state = th.load(reference / "students" / "digr.ckpt.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = th.zeros(3, 1)
    th.save(state, run / "students" / "digr.ckpt.pt")
    assert main(["distill", *_args(tmp_path, "ref"), "--student", "digr"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this student" in err and name in err
    # a teacher checkpoint of the right format, truncated, on an unfinished teacher
    (run / "stages" / "teacher.json").unlink()
    _truncate(run / "teacher" / "checkpoint" / "state.pt")
    assert main(["teacher", *_args(tmp_path, "ref")]) == 2
    assert "state.pt is corrupt" in capsys.readouterr().err
    # an SB3 zip whose data JSON has the wrong structure
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("data", json.dumps({"policy_class": [1, 2], "observation_space": 5}))
        buf = io.BytesIO()
        th.save({"w": th.zeros(1)}, buf)
        z.writestr("policy.pth", buf.getvalue())
    assert main(["teacher", *_args(tmp_path, "zip", f"teacher.sb3_zip={bad}", "teacher.arch=nature")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


def test_non_finite_numbers_never_give_a_result(tmp_path, reference, capsys):
    for field in ("distill.learning_rate=.inf", "teacher.learning_rate=.nan", "mask.kappa=.nan"):
        assert main(["run", *_args(tmp_path, "nan", field)]) == 2
        assert "finite" in capsys.readouterr().err
    assert not (tmp_path / "nan").exists()  # refused before the run folder was made
    # a finite learning rate so large that the loss overflows: training stops, named, and the checkpoint is kept
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    for s in STUDENTS:
        (run / "stages" / f"distill-{s}.json").unlink()
        (run / "students" / f"{s}.ckpt.pt").unlink()
        (run / "students" / f"{s}.safetensors").unlink()
    assert main(["distill", *_args(tmp_path, "ref", "distill.learning_rate=1e30"), "--student", "plain"]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err or "nan" in err or "inf" in err
    assert "distill.learning_rate" in err and not (run / "students" / "plain.safetensors").exists()
    assert not (run / "stages" / "distill-plain.json").exists()


@pytest.mark.slow
def test_an_atari_teacher_with_sticky_actions_resumes_byte_identically(tmp_path):
    """ALE keeps its own RNG (sticky actions): the replay restores it too, so an Atari teacher stopped after each
    update and resumed equals an uninterrupted one."""
    breakout = str(ROOT / "experiments" / "breakout.yaml")
    items = ["teacher.pretrained=null", "teacher.total_timesteps=768", "teacher.n_steps=32", "teacher.batch_size=64",
             "teacher.checkpoint_every=256", "env.kwargs={repeat_action_probability: 0.25}"]  # fmt: skip
    args = [arg for item in items for arg in ("-o", item)]
    assert main(["teacher", breakout, "-o", f"run_dir={tmp_path}", "-o", "name=a", *args]) == 0
    for _ in range(3):  # each call stops after one rollout and its update
        assert main(["teacher", breakout, "-o", f"run_dir={tmp_path}", "-o", "name=b", *args, "--max-minutes", "0"]) == 0
    assert main(["teacher", breakout, "-o", f"run_dir={tmp_path}", "-o", "name=b", *args]) == 0
    assert _sha(tmp_path / "a" / "teacher" / "teacher.safetensors") == _sha(tmp_path / "b" / "teacher" / "teacher.safetensors")
    assert _curve(tmp_path / "a") == _curve(tmp_path / "b")


@pytest.mark.parametrize("field", ["evaluate.env_kwargs", "evaluate.compare_env_kwargs"])
def test_a_typo_in_an_evaluation_protocol_is_named_before_anything_is_written(tmp_path, capsys, field):
    # the protocol envs are only made at the evaluate stage: without the start-up check a typo would cost a whole run
    assert main(["run", *_args(tmp_path, "typo", f"{field}={{tile_sizee: 8}}")]) == 2
    err = capsys.readouterr().err
    assert f"{field} {{'tile_sizee': 8}} do not fit" in err and f"fix or remove the key in {field}" in err
    assert "Traceback" not in err and not (tmp_path / "typo").exists()
