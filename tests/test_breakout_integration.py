"""Every stage on the real ALE Breakout at a tiny budget, through the CLI (issue 4's pipeline path)."""

import json

import numpy as np
import pytest
import torch

from digr.cli import main

TINY = [
    arg
    for item in (
        "teacher.pretrained=null",  # train a tiny teacher here rather than copy the committed one
        "teacher.total_timesteps=512",
        "teacher.n_envs=2",
        "teacher.n_steps=128",
        "teacher.batch_size=64",
        "teacher.checkpoint_every=256",
        "env.eval_kwargs={max_episode_steps: 150}",
        "dataset.train_frames=48",
        "dataset.heldout_frames=12",
        "dataset.max_per_episode=30",
        "distill.steps=6",
        "distill.batch_size=8",
        "distill.checkpoint_every=3",
        "evaluate.episodes=2",
        "evaluate.latency_repeats=1",
        "evaluate.latency_batch=2",
        "evaluate.figure_frames=2",
        "saliency_bench.frames=3",
        "saliency_bench.methods=[gradient, smoothgrad, perturbation]",
        "saliency_bench.n_samples=2",
        "saliency_bench.latency_repeats=1",
        "saliency_bench.latency_batch=2",
        "saliency_bench.deletion_steps=2",
        "saliency_bench.sanity_frames=2",
        "distill.students=[{name: plain, lam: 0.0, mask: none}, {name: igr_all, lam: 0.003, mask: all},"
        " {name: digr, lam: 0.003, mask: selective},"
        " {name: rs_digr, lam: 0.003, mask: selective, attention: region, attention_entropy: 0.005}]",
    )
    for arg in ("-o", item)
]


@pytest.mark.integration
def test_breakout_pipeline_and_attack(tmp_path, capsys):
    args = ["experiments/breakout.yaml", "-o", f"run_dir={tmp_path}", "-o", "name=bo", *TINY]
    assert main(["run", *args]) == 0
    run = tmp_path / "bo"
    spec = json.loads((run / "teacher" / "teacher.json").read_text())
    assert spec["spaces"]["observation"]["image"] == [4, 84, 84] and spec["policy_kwargs"]["arch"] == "nature"
    m = json.loads((run / "metrics.json").read_text())
    r = m["teacher"]["rollout"]
    assert r["episodes"] == 2 and r["success_rate"] != r["success_rate"]  # Atari has no success signal: NaN, scored by return
    # the sticky-action protocol, with the deterministic no-op protocol beside it
    assert all("rollout_compare" in a for a in (m["teacher"], *m["students"].values()))
    report = (run / "report.md").read_text()
    assert "no-op protocol" in report and "repeat_action_probability" in report
    # ground truth from the emulator's RAM: ball and paddle masks on the held-out frames, localisation per map
    held = np.load(run / "dataset_heldout.npz")
    assert held["region_paddle"].any(axis=(1, 2)).all() and held["target_mask"].any()
    q = m["maps"]["digr gradient"]
    assert {"mass_inside", "mass_inside_ball", "pointing_game_paddle", "deletion_auc", "spearman_occlusion"} <= set(q)
    assert json.loads((run / "students" / "digr.json").read_text())["arch"] == "nature"
    # an attention student (region-sensitive module on the Nature trunk, with DIGR's penalty) runs every stage too,
    # and its built-in map is graded on the RAM ground truth like every other map
    assert json.loads((run / "students" / "rs_digr.json").read_text())["attention"] == "region"
    assert {"mass_inside_ball", "pointing_game_paddle", "deletion_auc"} <= set(m["maps"]["rs_digr attention"])
    assert m["latency"]["rows"][1]["passes"] == "290 fwd"  # 17 × 17 masks at stride 5 on 84 × 84, + the clean pass
    assert (
        main(
            [
                "attack",
                *args,
                "--attacks",
                "fgsm,critic",
                "--eps",
                "1/255",
                "--episodes",
                "1",
                "-o",
                "attack.open_loop_frames=4",
                "-o",
                "attack.options={critic: {steps: 3}}",
            ]
        )
        == 0
    )
    rows = json.loads((run / "attack" / "results.json").read_text())["rows"]
    assert {(x["agent"], x["attack"]) for x in rows} >= {("teacher", "critic"), ("digr", "fgsm")}
    assert next(x for x in rows if x["agent"] == "teacher" and x["attack"] == "critic")["attack_config"]["steps"] == 3
    assert next(x for x in rows if x["agent"] == "digr" and x["attack"] == "critic")["skipped"]  # students have no value head
    assert next(x for x in rows if x["agent"] == "rs_digr" and x["attack"] == "fgsm")["closed_loop"]["episodes"] == 1
    # a second call with another attack keeps the first call's cells (same protocol)
    # (--agents restricts a call to some agents)
    assert (
        main(
            [
                "attack",
                *args,
                "--attacks",
                "random",
                "--eps",
                "1/255",
                "--episodes",
                "1",
                "-o",
                "attack.open_loop_frames=4",
                "--agents",
                "plain,digr",
            ]
        )
        == 0
    )
    rows = json.loads((run / "attack" / "results.json").read_text())["rows"]
    assert {x["attack"] for x in rows} == {"fgsm", "critic", "random"}
    assert {x["agent"] for x in rows if x["attack"] == "random"} == {"plain", "digr"}
    assert all(x["protocol"]["weights_sha256"] for x in rows)

    # an interrupted call resumes: finished cells in partial.json are reused, not evaluated again
    attack_dir = run / "attack"
    planted = json.loads((attack_dir / "results.json").read_text())
    cell = next(x for x in planted["rows"] if x["agent"] == "digr" and x["attack"] == "random")
    cell["closed_loop"]["return_mean"] = 123.0  # a value no tiny-budget episode can give
    other = next(x for x in planted["rows"] if x["agent"] == "teacher" and x["attack"] == "fgsm")
    # the call below, stopped after one cell, and an interrupted earlier call (teacher fgsm) that it does not ask for
    (attack_dir / "partial.json").write_text(json.dumps({"rows": [other, cell]}))
    planted["rows"] = [x for x in planted["rows"] if x["attack"] != "random" and x is not other]  # results.json before
    (attack_dir / "results.json").write_text(json.dumps(planted))
    random_call = [
        "attack",
        *args,
        "--attacks",
        "random",
        "--eps",
        "1/255",
        "--episodes",
        "1",
        "-o",
        "attack.open_loop_frames=4",
    ]
    assert main([*random_call, "--agents", "plain,digr"]) == 0
    rows = json.loads((attack_dir / "results.json").read_text())["rows"]
    assert next(x for x in rows if x["agent"] == "digr" and x["attack"] == "random")["closed_loop"]["return_mean"] == 123.0
    assert not (attack_dir / "partial.json").exists()
    assert any(x["agent"] == "teacher" and x["attack"] == "fgsm" for x in rows)  # the other interrupted cell is kept

    # a retrained student: its old cells leave the table (set aside in a file, not deleted); the others stay
    from digr.policies import load_student, save_student

    student = load_student(run / "students" / "digr.safetensors")
    with torch.no_grad():
        next(student.parameters()).add_(0.01)
    save_student(student, run / "students" / "digr.safetensors")
    (attack_dir / "partial.json").write_text(json.dumps({"rows": [cell]}))  # an interrupted call on the old weights
    assert main([*random_call, "--agents", "plain"]) == 0
    assert len(list(attack_dir.glob("partial.superseded-*.json"))) == 1 and not (attack_dir / "partial.json").exists()
    rows = json.loads((attack_dir / "results.json").read_text())["rows"]
    assert {x["agent"] for x in rows} == {"teacher", "plain", "igr_all", "rs_digr"} and any(
        x["attack"] == "fgsm" for x in rows
    )
    aside = list(attack_dir.glob("results.superseded-*.json"))
    assert len(aside) == 1 and any(x["agent"] == "digr" for x in json.loads(aside[0].read_text())["rows"])

    capsys.readouterr()
    assert main(["attack", *args, "--attacks", "random", "--agents", "student"]) == 2  # unknown agent: clear error
    assert "unknown agent 'student'" in capsys.readouterr().err
    report = (run / "report.md").read_text()
    assert "## Robustness to observation attacks" in report and "## Saliency methods" in report
