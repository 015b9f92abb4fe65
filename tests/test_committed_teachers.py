"""The teachers committed under experiments/teachers/ load, fit the configs that use them, and replay their recorded
scores (a seeded greedy game on the real ALE gives the committed number)."""

import functools
import json
from pathlib import Path

import pytest

from digr.contracts import make_env
from digr.evaluation.robustness import attacked_rollout_returns
from digr.policies.teacher import TeacherFolder, copy_pretrained_teacher, load_teacher, teacher_spaces
from digr.running.config import load_config

BREAKOUT = Path("experiments/teachers/breakout")


@pytest.mark.skipif(not (BREAKOUT / "teacher.safetensors").is_file(), reason="no committed Breakout teacher")
def test_committed_breakout_teacher_fits_its_config_and_replays_a_recorded_game(tmp_path):
    cfg = load_config("experiments/breakout.yaml")
    assert Path(cfg.teacher.pretrained) == BREAKOUT
    env = make_env(cfg.env.id, **cfg.env.kwargs)
    spaces = teacher_spaces(env)
    env.close()
    teacher = load_teacher(copy_pretrained_teacher(BREAKOUT, TeacherFolder(tmp_path / "teacher"), spaces, cfg.teacher))
    provenance = json.loads((BREAKOUT / "provenance.json").read_text())
    assert json.loads((BREAKOUT / "teacher.json").read_text())["num_timesteps"] >= provenance["teacher"]["total_timesteps"]
    evaluation = json.loads((BREAKOUT / "evaluation.json").read_text())
    seed = int(evaluation["seeds"].split("..")[0])
    eval_kwargs = cfg.env.eval_kwargs if cfg.env.eval_kwargs is not None else cfg.env.kwargs
    eval_fn = functools.partial(make_env, cfg.env.eval_id, **eval_kwargs)
    game = attacked_rollout_returns(eval_fn, teacher, None, episodes=1, seed=seed, n_parallel=1)
    assert game["returns"][0] == evaluation["scores"][0]


CARRACING = Path("experiments/teachers/carracing")


@pytest.mark.skipif(not (CARRACING / "teacher.safetensors").is_file(), reason="no committed CarRacing teacher")
def test_committed_carracing_teacher_fits_its_config_and_replays_a_recorded_track(tmp_path):
    """The imitation teacher loads, fits experiments/carracing.yaml, was scored beside the expert on the same held-out
    tracks, and a greedy episode on the first of them gives the committed return."""
    from digr.evaluation.returns import rollout_returns

    cfg = load_config("experiments/carracing.yaml")
    assert Path(cfg.teacher.pretrained) == CARRACING and cfg.teacher.kind == "imitation"
    env = make_env(cfg.env.id, **cfg.env.kwargs)
    spaces = teacher_spaces(env)
    env.close()
    teacher = load_teacher(copy_pretrained_teacher(CARRACING, TeacherFolder(tmp_path / "teacher"), spaces, cfg.teacher))
    spec = json.loads((CARRACING / "teacher.json").read_text())
    assert spec["algo"] == "imitation" and (CARRACING / "imitation.json").is_file()
    evaluation = json.loads((CARRACING / "evaluation.json").read_text())
    first = int(evaluation["seeds"].split("..")[0])
    assert first >= cfg.evaluate.seed and evaluation["teacher"]["episodes"] >= 20  # held-out tracks, not training ones
    r = rollout_returns(functools.partial(make_env, cfg.env.id, **cfg.env.kwargs), teacher, 1, first)
    assert r["returns"][0] == pytest.approx(evaluation["teacher"]["returns"][0], abs=1e-6)
