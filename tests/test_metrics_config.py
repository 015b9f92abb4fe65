"""Metrics on constructed maps, config validation, checkpoint safety."""

import numpy as np
import pytest
import torch as th

from digr.checkpoint import CheckpointError, load_state_dict, load_training_state, save_state_dict
from digr.evaluation.metrics import mass_inside, nanmean_ci, pointing_game, spearman, topk_iou
from digr.running.config import ConfigError, config_from_dict, load_config


def test_agreement_metrics_known_answers():
    a = th.arange(16.0).view(1, 4, 4)
    assert np.allclose(spearman(a, a * 3 + 1), 1.0)
    assert np.allclose(spearman(a, -a), -1.0)
    assert np.isnan(spearman(a, th.zeros(1, 4, 4))[0])
    assert np.allclose(topk_iou(a, a, 25), 1.0)
    assert np.allclose(topk_iou(a, -a, 25), 0.0)
    b = a.clone()
    b[0, 3, 3] = -1  # top-4 of b = {11,12,13,14}; of a = {12..15}: IoU 3/5
    assert np.allclose(topk_iou(a, b, 25), 3 / 5)


def test_localisation_metrics_known_answers():
    s = th.zeros(2, 4, 4)
    s[0, 0, 0], s[0, 3, 3] = 3.0, 1.0
    s[1, 2, 2] = 1.0
    m = np.zeros((2, 4, 4), bool)
    m[:, 0, 0] = True
    assert np.allclose(mass_inside(s, m), [0.75, 0.0])
    assert np.allclose(pointing_game(s, m), [1.0, 0.0])
    assert np.isnan(pointing_game(s, np.zeros((2, 4, 4), bool))).all()
    mean, _ci, n = nanmean_ci([1.0, np.nan, 3.0])
    assert mean == 2.0 and n == 2


def test_config_errors_name_field_and_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher\.lr.*learning_rate"):
        config_from_dict({"teacher": {"lr": 1}})
    with pytest.raises(ConfigError, match=r"distill.students\[0\].mask.*selective"):
        config_from_dict({"distill": {"students": [{"name": "a", "lam": 1, "mask": "everything"}]}})
    with pytest.raises(ConfigError, match=r"mask\.kappa"):
        config_from_dict({"mask": {"kappa": 2}})
    with pytest.raises(ConfigError, match=r"teacher\.n_envs: .*integer"):
        config_from_dict({"teacher": {"n_envs": "many"}})
    p = tmp_path / "c.yaml"
    p.write_text("distill:\n  learning_rate: 1e-4\n")
    assert load_config(p).distill.learning_rate == 1e-4  # YAML reads 1e-4 as a string; accepted as a number
    assert load_config(p, ["teacher.total_timesteps=123"]).teacher.total_timesteps == 123
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    assert (
        config_from_dict({"attack": {"options": {"pgd50": {"step_size": 0.004}}}}).attack.options["pgd50"]["step_size"]
        == 0.004
    )
    with pytest.raises(ConfigError, match=r"attack.options.pgd50: .*stepsize"):
        config_from_dict({"attack": {"options": {"pgd50": {"stepsize": 0.004}}}})
    with pytest.raises(ConfigError, match=r"attack.options.pgd50: .*step_size"):
        config_from_dict({"attack": {"options": {"pgd50": {"step_size": -1}}}})
    with pytest.raises(ConfigError, match=r"attack.options.pgf: "):
        config_from_dict({"attack": {"options": {"pgf": {}}}})


def test_shipped_experiment_configs_load():
    from pathlib import Path

    for p in sorted(Path(__file__).parents[1].joinpath("experiments").glob("*.yaml")):
        load_config(p)


def test_corrupt_checkpoints_raise_clear_errors(tmp_path):
    save_state_dict({"w": th.ones(2)}, tmp_path / "w.safetensors")
    assert th.equal(load_state_dict(tmp_path / "w.safetensors")["w"], th.ones(2))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state_dict(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_training_state(tmp_path / "bad.pt")


def test_distinct_episodes_counts_different_games():
    from digr.evaluation.returns import distinct_episodes, summarize_episodes

    same_start = summarize_episodes([21.0, 21.0, 33.0, 21.0], [float("nan")] * 4, [663, 663, 915, 700])
    assert distinct_episodes(same_start) == 3  # (21, 663) twice is one game; same score, other length is another
    import numpy as np

    from digr.rollout import TrajectoryHash

    def game(*frames):
        h = TrajectoryHash()
        for f in frames:
            h.update({"image": np.full((1, 2, 2), f, np.uint8)})
        return h.hexdigest()

    ids = [game(1, 2, 3), game(1, 2, 3), game(4, 2, 3), game(1, 2)]
    assert ids[0] == ids[1] and len(set(ids)) == 3 and len(ids[0]) == 16
    layouts = summarize_episodes([0.9, 0.9, 0.9, 0.9], [1.0] * 4, [5, 5, 5, 5], ids)  # equal return and length, 3 games
    assert distinct_episodes(layouts) == 3 and layouts["trajectory_ids"] == ids
