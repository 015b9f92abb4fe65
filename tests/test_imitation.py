"""Imitation teachers (digr/policies/imitation.py): the DAgger mixture, the supervised step, label smoothing, the
config checks, and a real CarRacing teacher at a tiny budget that resumes to the same weights as an uninterrupted run."""

import functools
import json

import numpy as np
import pytest
import torch as th

from digr.checkpoint import sha256_file
from digr.contracts import make_env
from digr.errors import ConfigError
from digr.policies import load_teacher
from digr.policies.imitation import DAggerActor, ExpertLabels, fit_actions, imitation_seed, load_expert, train_imitation
from digr.policies.teacher_folder import TeacherFolder
from digr.rollout import run_episodes
from digr.running.config import config_from_dict, load_config
from envs.carracing import PurePursuitExpert


class _Fixed:
    """An 'expert' that always answers ``action``."""

    def __init__(self, action):
        self.action = action

    def act(self, info):
        return self.action


class _Const(th.nn.Module):
    """A policy whose greedy action is always ``action`` (of 3)."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def forward(self, image, side=None):
        out = th.full((len(image), 3), -5.0)
        out[:, self.action] = 0.0
        return out


def test_dagger_actor_mixes_expert_and_learner_and_always_labels_with_the_expert():
    image, infos = th.zeros(4000, 1, 2, 2), [{}] * 4000
    expert_only = DAggerActor(_Fixed(1), _Const(2), beta=1.0)(image, None, infos)
    assert expert_only.actions == [1] * 4000 and expert_only.extras["expert"] == [1] * 4000
    learner_only = DAggerActor(_Fixed(1), _Const(2), beta=0.0)(image, None, infos)
    assert learner_only.actions == [2] * 4000 and learner_only.extras["expert"] == [1] * 4000
    mixed = DAggerActor(_Fixed(1), _Const(2), beta=0.25, generator=th.Generator().manual_seed(0))(image, None, infos)
    assert abs(np.mean(np.asarray(mixed.actions) == 1) - 0.25) < 0.03 and mixed.extras["expert"] == [1] * 4000


def _planted(n=256, seed=0):
    """Images whose label (0/1/2) is which of three pixels is lit."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = np.zeros((n, 1, 1, 3), np.uint8)
    images[np.arange(n), 0, 0, labels] = 255
    return {"images": images, "labels": labels.astype(np.int64)}


class _Linear(th.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = th.nn.Linear(3, 3)

    def forward(self, image, side=None):
        return th.log_softmax(self.fc(image.flatten(1)), -1)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_fit_actions_learns_the_expert_and_smoothing_keeps_spread(smoothing):
    """Cross-entropy to the expert's action drives agreement to 1; with label smoothing s the fitted probability of the
    expert's action tends to 1 − s + s/A (not to 1), which keeps the teacher's distribution informative for the KL."""
    th.manual_seed(0)
    policy, data = _Linear(), _planted()
    optim = th.optim.Adam(policy.parameters(), lr=0.05)
    fit = fit_actions(policy, optim, data, epochs=60, batch_size=64, label_smoothing=smoothing, generator=th.Generator())
    assert fit["accuracy"] == 1.0
    p = th.exp(policy(th.as_tensor(data["images"]).float() / 255)).gather(1, th.as_tensor(data["labels"])[:, None])
    if smoothing == 0.0:
        assert p.min() > 0.97
    else:
        assert abs(float(p.detach().mean()) - (1 - smoothing + smoothing / 3)) < 0.03


def test_expert_labels_record_images_labels_and_returns():
    env_fn = functools.partial(make_env, "envs.carracing:DIGR/CarRacing-v0", max_episode_steps=10, road_mask=False)
    rec = ExpertLabels()
    run_episodes(env_fn, DAggerActor(PurePursuitExpert()), episodes=2, seed=5, hooks=[rec])
    arrays = rec.arrays()
    assert arrays["images"].shape == (20, 6, 84, 96) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].shape == (20,) and len(arrays["returns"]) == 2
    env = env_fn()  # the labels are the expert's own actions on those states
    _, info = env.reset(seed=5)
    assert arrays["labels"][0] == PurePursuitExpert().act(info)


def test_load_expert_and_config_errors():
    assert isinstance(load_expert("envs.carracing:PurePursuitExpert", {"gain": 0.9}), PurePursuitExpert)
    with pytest.raises(ConfigError, match="module:Class"):
        load_expert("PurePursuitExpert")
    with pytest.raises(ConfigError, match="cannot import"):
        load_expert("envs.carracing:NoSuchExpert")
    with pytest.raises(ConfigError, match="expert_kwargs"):
        load_expert("envs.carracing:PurePursuitExpert", {"gian": 1.0})
    with pytest.raises(ConfigError, match=r"teacher\.expert"):
        config_from_dict({"teacher": {"kind": "imitation"}})
    with pytest.raises(ConfigError, match="beta"):
        config_from_dict({"teacher": {"kind": "imitation", "expert": "a:B", "imitation": {"beta": 1.5}}})
    assert imitation_seed(0, 0) != imitation_seed(0, 1) and not 100_000 <= imitation_seed(0, 4) < 100_100


def _tiny(tmp_path, name):
    cfg = load_config(
        "experiments/carracing.yaml",
        [f"run_dir={tmp_path}", f"name={name}", "env.kwargs.max_episode_steps=20", "env.kwargs.road_mask=false",
         "teacher.imitation.bc_episodes=1", "teacher.imitation.dagger_rounds=1", "teacher.imitation.dagger_episodes=1",
         "teacher.imitation.epochs=1", "teacher.imitation.batch_size=8"],
    )  # fmt: skip
    return cfg, TeacherFolder(cfg.run_path / "teacher")


def test_carracing_teacher_trains_loads_and_resumes_exactly(tmp_path):
    """A real CarRacing imitation teacher at a tiny budget: stopped after round 0 (max_minutes=0) and resumed, it ends
    with the same weights as an uninterrupted run; it loads like any DIGR teacher."""
    cfg, whole = _tiny(tmp_path, "whole")
    env_fn = cfg.env.make_fn(evaluation=True)
    assert train_imitation(env_fn, cfg.teacher, whole, seed=0, log=lambda _: None) == whole.weights
    _, parts = _tiny(tmp_path, "parts")
    assert train_imitation(env_fn, cfg.teacher, parts, seed=0, max_minutes=0.0, log=lambda _: None) is None
    assert not parts.weights.exists() and (parts.checkpoint_dir / "round_0.npz").is_file()
    assert train_imitation(env_fn, cfg.teacher, parts, seed=0, log=lambda _: None) == parts.weights
    assert sha256_file(parts.weights) == sha256_file(whole.weights)
    history = json.loads(whole.imitation.read_text())
    assert [row["round"] for row in history] == [0, 1] and history[1]["states"] == 40
    spec = json.loads(whole.spec.read_text())
    assert spec["algo"] == "imitation" and spec["num_timesteps"] == 40
    teacher = load_teacher(whole.weights)
    obs, _ = env_fn().reset(seed=0)
    assert teacher(th.as_tensor(obs["image"][None]).float() / 255, th.as_tensor(obs["side"][None])).shape == (1, 15)
