"""Every stage on the real MiniGrid env at tiny budgets, through the CLI as a user runs it."""

import json
import math
import shutil

import numpy as np
import pytest
import torch as th

from digr.cli import main
from digr.evaluation import run_metrics
from digr.evaluation.independent import independent_quality, occlusion_maps
from digr.evaluation.maps import gradient_maps, map_quality
from digr.evaluation.returns import rollout_returns
from digr.method.dataset import load_dataset
from digr.policies import load_student, load_teacher

TINY = [
    arg
    for item in (
        "env.kwargs={max_steps: 24}",
        "teacher.total_timesteps=512",
        "teacher.n_envs=2",
        "teacher.n_steps=256",
        "teacher.batch_size=128",
        "teacher.checkpoint_every=256",
        "dataset.train_frames=96",
        "dataset.heldout_frames=32",
        "dataset.heldout_max_per_episode=4",  # the config keeps 8 per training episode
        "distill.steps=20",
        "distill.batch_size=16",
        "distill.checkpoint_every=10",
        "distill.dagger_rounds=1",
        "distill.dagger_frames=12",
        "evaluate.episodes=3",
        "evaluate.latency_repeats=2",
        "evaluate.latency_batch=4",
        "evaluate.figure_frames=2",
        "saliency_bench.frames=6",
        "saliency_bench.n_samples=3",
        "saliency_bench.ig_steps=3",
        "saliency_bench.latency_repeats=1",
        "saliency_bench.latency_batch=4",
        "saliency_bench.deletion_steps=4",
        "saliency_bench.sanity_frames=3",
        "saliency_bench.in_run=true",  # the main job keeps the bench out of `digr run`; this test covers it as a stage
    )
    for arg in ("-o", item)
]
CONFIG = "experiments/minigrid_fetch.yaml"


def _strip_timing(m):
    m = dict(m)
    m.pop("latency")
    return m


def test_saliency_bench_needs_a_trained_run(tmp_path, capsys):
    assert main(["saliency-bench", CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=nothing"]) == 2
    assert "digr run" in capsys.readouterr().err


@pytest.mark.integration
def test_pipeline_end_to_end_resume_and_reproduce(tmp_path, capsys, monkeypatch):
    args = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=a", *TINY]
    assert main(["run", *args]) == 0
    run = tmp_path / "a"
    for f in (
        "report.md",
        "metrics.json",
        "saliency_grid.png",
        "teacher_curve.png",
        "teacher/teacher.zip",
        "teacher/teacher.safetensors",
        "students/digr.safetensors",
        "students/plain.safetensors",
        "students/igr_all.safetensors",
        "dataset_train.npz",
    ):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["students"]) == {"plain", "igr_all", "digr"}
    assert m["teacher"]["rollout"]["episodes"] == 3
    # the report's map metrics are those of the saved artefacts: recomputed from the stored students, held-out states
    # and teacher maps, every number matches; and the DIGR and plain students (different losses) got different maps
    held = load_dataset(run / "dataset_heldout.npz")
    image, side = held.tensors()
    reference = th.as_tensor(np.load(run / "teacher_saliency_heldout.npy"))
    target = held.target_mask if held.target_mask.any() else None
    assert np.unique(held.episode, return_counts=True)[1].max() <= 4 < len(np.unique(held.episode))  # held-out cap
    teacher = load_teacher(run / "teacher" / "teacher.safetensors")
    occlusion = occlusion_maps(teacher, image, side)  # the mask-independent reference, as the run computed it
    for name in ("digr", "plain"):
        student = load_student(run / "students" / f"{name}.safetensors")
        maps = th.as_tensor(gradient_maps(student, image, side))
        recorded = m["maps"][f"{name} gradient"]
        quality = map_quality(maps, reference, target, m["top_percent"])
        quality |= independent_quality(student, maps, image, side, occlusion, m["top_percent"])
        assert _close(quality, recorded)
        assert recorded["deletion_auc"]["n"] == 32 and 0.0 <= recorded["deletion_auc"]["mean"] <= 1.0
    # the occlusion reference has its own row: localisation, agreement with the perturbation map, faithfulness
    assert {"spearman", "mass_inside", "insertion_auc"} <= set(m["maps"]["teacher occlusion"])
    assert "spearman_occlusion" not in m["maps"]["teacher occlusion"]
    assert m["maps"]["digr gradient"] != m["maps"]["plain gradient"]
    assert m["maps"]["teacher gradient"]["spearman"]["n"] == len(held) == 32
    assert m["latency"]["ratio"]["1"] > 1.0  # one backward pass beats 257 forward passes even at batch 1
    report = (run / "report.md").read_text()
    assert "| digr |" in report and "Spearman" in report
    assert "## Saliency evidence independent of the mask" in report and "| digr gradient | " in report
    # the saliency-bench stage ran every method on every agent and joined the report
    bench = json.loads((run / "saliency_bench" / "results.json").read_text())
    assert len(bench["rows"]) == 4 * 12 and (run / "saliency_bench" / "quality_vs_cost.png").is_file()
    assert "## Saliency methods: quality vs cost" in report and "| digr | adaptgrad-3 |" in report
    ref_row = next(r for r in bench["rows"] if r["agent"] == "teacher" and r["method"].startswith("perturbation"))
    assert ref_row["spearman"]["mean"] > 0.999  # the teacher's perturbation map is the reference itself

    # a rerun skips every finished stage and leaves artefacts untouched
    before = (run / "students" / "digr.safetensors").stat().st_mtime_ns
    evaluated = (run / "metrics.json").stat().st_mtime_ns
    assert main(["run", *args]) == 0
    assert (run / "students" / "digr.safetensors").stat().st_mtime_ns == before
    assert (run / "metrics.json").stat().st_mtime_ns == evaluated  # a current evaluation is not redone by `digr run`

    # a changed upstream config is refused, naming the field, and nothing is lost
    assert main(["run", *args, "-o", "dataset.train_frames=64"]) == 2
    assert "dataset.train_frames" in capsys.readouterr().err
    assert (run / "students" / "digr.safetensors").stat().st_mtime_ns == before

    # DAgger: the student's own states were labelled by the teacher and cached, and training ran 2 × 20 steps
    assert (run / "students" / "digr.dagger1.npz").is_file()
    assert json.loads((run / "students" / "digr.history.json").read_text())[-1]["step"] == 40
    # an interrupted student resumes: drop its finished marker and weights, keep its checkpoint
    (run / "stages" / "distill-digr.json").unlink()
    (run / "students" / "digr.safetensors").unlink()
    assert main(["distill", *args, "--student", "digr"]) == 0
    assert (run / "students" / "digr.safetensors").is_file()
    assert main(["run", *args]) == 0  # a student retrained after the evaluation makes it stale: `digr run` redoes it
    assert (run / "metrics.json").stat().st_mtime_ns > evaluated
    evaluated = (run / "metrics.json").stat().st_mtime_ns
    replayed = []  # `digr evaluate` always measures again, but replays no episode whose weights and protocol are unchanged
    monkeypatch.setattr(run_metrics, "rollout_returns", lambda *a, **k: replayed.append(a) or rollout_returns(*a, **k))
    assert main(["evaluate", *args]) == 0
    assert (run / "metrics.json").stat().st_mtime_ns > evaluated and replayed == []
    again = json.loads((run / "metrics.json").read_text())
    assert again["students"]["plain"]["rollout"] == m["students"]["plain"]["rollout"]
    assert main(["evaluate", *args, "-o", "evaluate.episodes=2"]) == 0  # another protocol: every agent plays again
    assert len(replayed) == 4 and json.loads((run / "metrics.json").read_text())["teacher"]["rollout"]["episodes"] == 2
    monkeypatch.undo()
    assert main(["evaluate", *args]) == 0  # back to the test's protocol for the summary below

    # the same seed in a fresh folder reproduces every metric except wall-clock latency
    args_b = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=b", *TINY]
    assert main(["run", *args_b]) == 0
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    a, b = _strip_timing(m), _strip_timing(mb)
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) or _close(a, b)
    bench_b = json.loads((tmp_path / "b" / "saliency_bench" / "results.json").read_text())
    untimed = [
        [{k: v for k, v in r.items() if k not in ("ms_per_frame", "bench_compute_s")} for r in x["rows"]]
        for x in (bench, bench_b)
    ]
    assert _close(untimed[0], untimed[1])
    # `digr summarize` reads the real run folder: one seed, so each IQM is that run's number
    assert main(["summarize", str(run), "--reps", "50", "--out", str(tmp_path / "summary")]) == 0
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())["variants"][0]["estimates"]
    assert summary["return"]["digr"]["iqm"] == pytest.approx(m["students"]["digr"]["rollout"]["return_mean"])
    spearman = m["maps"]["digr gradient"]["spearman"]["mean"]
    assert summary["saliency spearman"]["digr gradient"]["iqm"] == pytest.approx(spearman)
    assert main(["summarize", str(tmp_path)]) == 2  # a and b: the same seed of one variant would count twice
    assert "same seed" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "b")


def _close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def test_cli_rejects_bad_config_field(tmp_path, capsys):
    assert main(["run", CONFIG, "-o", f"run_dir={tmp_path}", "-o", "teacher.lr=1"]) == 2
    err = capsys.readouterr().err
    assert "teacher.lr" in err and "learning_rate" in err
    assert main(["evaluate", CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=empty"]) == 2


@pytest.mark.integration
def test_teacher_budget_stops_and_resumes(tmp_path):
    args = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=budget", *TINY, "-o", "teacher.total_timesteps=1024"]
    assert main(["teacher", *args, "--max-minutes", "0.0001"]) == 0  # stops at the first step, checkpointed
    run = tmp_path / "budget"
    assert (run / "teacher" / "checkpoint" / "state.pt").is_file() and not (run / "stages" / "teacher.json").exists()
    assert main(["teacher", *args]) == 0
    spec = json.loads((run / "teacher" / "teacher.json").read_text())
    assert spec["num_timesteps"] >= 1024 and spec["train_wall_s"] > 0
    assert (run / "stages" / "teacher.json").is_file()
    provenance = json.loads((run / "teacher" / "provenance.json").read_text())
    assert provenance["teacher"]["total_timesteps"] == 1024 and provenance["env"]["id"].endswith("FetchColorGreen-8x8-v0")
    # the finished folder serves as teacher.pretrained of another run: copied in, nothing trained
    again = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=reuse", *TINY, "-o", f"teacher.pretrained={run / 'teacher'}"]
    assert main(["teacher", *again]) == 0
    assert (tmp_path / "reuse" / "teacher" / "provenance.json").is_file() and not (
        tmp_path / "reuse" / "teacher" / "checkpoint"
    ).exists()


def test_latency_bench_times_both_maps_at_each_thread_count(tmp_path, capsys):
    import torch as th

    before = th.get_num_threads()
    args = [
        "bench",
        "saliency",
        CONFIG,
        "-o",
        f"run_dir={tmp_path}",
        "-o",
        "name=untrained",
        "--batch",
        "1,2",
        "--repeats",
        "2",
    ]
    assert main([*args, "--threads", "1,2"]) == 0
    out = capsys.readouterr().out
    for n in (1, 2):
        for b in (1, 2):
            assert f"{n} thread(s), batch {b}: perturbation / gradient" in out
    assert th.get_num_threads() == before
    assert main([*args, "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
