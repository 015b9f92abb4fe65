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
