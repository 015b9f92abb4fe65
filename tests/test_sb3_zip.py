"""A user's SB3 CnnPolicy zip imports as a DIGR teacher without unpickling, and drives the real Breakout pipeline."""

import io
import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO

from digr.checkpoint import CheckpointError
from digr.cli import main
from digr.policies.sb3_zip import import_sb3_zip, read_sb3_zip
from digr.policies.teacher import TeacherFolder, copy_pretrained_teacher, load_teacher
from digr.running.config import ConfigError, TeacherConfig


class _BoxAtari(gym.Env):
    """Stand-in with the RL-Zoo Atari spaces: uint8 (84, 84, 4) frames (SB3 transposes them to channel-first)."""

    observation_space = spaces.Box(0, 255, (84, 84, 4), np.uint8)
    action_space = spaces.Discrete(4)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _save_zip(path, **policy_kwargs):
    model = PPO("CnnPolicy", _BoxAtari(), n_steps=16, batch_size=16, policy_kwargs=policy_kwargs or None, seed=0, device="cpu")
    with th.no_grad():  # move the weights off SB3's orthogonal init so that a wrong mapping cannot go unnoticed
        for p in model.policy.parameters():
            p.add_(0.05 * th.randn_like(p))
    model.save(path)
    return model


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        {},
        {"net_arch": {"pi": [32], "vf": [16]}},
        {"net_arch": {"pi": [32], "vf": [16]}, "activation_fn": th.nn.ReLU},  # a class: SB3 pickles the kwargs, str() beside
        {"share_features_extractor": False},
    ],
)
def test_imported_zip_gives_the_same_logits_and_values(tmp_path, policy_kwargs):
    model = _save_zip(tmp_path / "agent.zip", **policy_kwargs)
    path = import_sb3_zip(tmp_path / "agent.zip", TeacherFolder(tmp_path / "teacher"), (4, 84, 84), 4)
    teacher = load_teacher(path)
    frames = th.randint(0, 256, (5, 4, 84, 84), dtype=th.uint8)
    with th.no_grad():
        want_logits = model.policy.get_distribution(frames.float()).distribution.logits
        want_values = model.policy.predict_values(frames.float()).squeeze(-1)
        got_logits = teacher(frames.float() / 255.0)
        got_values = teacher.value(frames.float() / 255.0)
    th.testing.assert_close(got_logits, want_logits)
    th.testing.assert_close(got_values, want_values)
    spec = json.loads((tmp_path / "teacher" / "teacher.json").read_text())
    assert spec["policy"] == "cnn" and spec["spaces"] == {"observation": {"image": [4, 84, 84]}, "n_actions": 4}
    assert spec["policy_kwargs"]["net_arch"] == policy_kwargs.get("net_arch", {"pi": [], "vf": []})
    assert spec["policy_kwargs"]["activation_fn"] == ("ReLU" if "activation_fn" in policy_kwargs else "Tanh")
    assert spec["policy_kwargs"]["share_features_extractor"] == policy_kwargs.get("share_features_extractor", True)
    # gradients reach the image, as saliency and attacks need
    image = (frames[:1].float() / 255.0).requires_grad_(True)
    teacher(image)[0, 1].backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_zip_that_does_not_fit_the_env_is_refused_naming_both_shapes(tmp_path):
    _save_zip(tmp_path / "agent.zip")
    with pytest.raises(CheckpointError, match=r"\(4, 84, 84\) and 4 actions.*\(3, 64, 64\) and 4"):
        import_sb3_zip(tmp_path / "agent.zip", TeacherFolder(tmp_path / "teacher"), (3, 64, 64), 4)
    assert not (tmp_path / "teacher" / "teacher.safetensors").exists()


def test_pretrained_teacher_folder_is_copied_and_checked(tmp_path):
    _save_zip(tmp_path / "agent.zip")
    src = import_sb3_zip(tmp_path / "agent.zip", TeacherFolder(tmp_path / "src"), (4, 84, 84), 4).parent
    atari = {"observation": {"image": [4, 84, 84]}, "n_actions": 4}
    nature = TeacherConfig(arch="nature", features_dim=512)
    (tmp_path / "run" / "teacher").mkdir(parents=True)
    (tmp_path / "run" / "teacher" / "curve.csv").write_text("steps\n1\n")  # left by an earlier teacher: must not survive
    copied = copy_pretrained_teacher(src, TeacherFolder(tmp_path / "run" / "teacher"), atari, nature)
    assert copied.read_bytes() == (src / "teacher.safetensors").read_bytes()
    assert not (tmp_path / "run" / "teacher" / "curve.csv").exists()
    frames = th.rand(3, 4, 84, 84)
    with th.no_grad():
        th.testing.assert_close(
            load_teacher(copied)(frames), load_teacher(src / "teacher.safetensors")(frames), rtol=0, atol=0
        )
    with pytest.raises(CheckpointError, match=r"was trained on .*\[4, 84, 84\].*but the env gives .*\[3, 64, 64\]"):
        copy_pretrained_teacher(
            src, TeacherFolder(tmp_path / "other"), {"observation": {"image": [3, 64, 64]}, "n_actions": 4}, nature
        )
    with pytest.raises(CheckpointError, match="was trained on"):  # same image, but the env has a side input
        copy_pretrained_teacher(
            src,
            TeacherFolder(tmp_path / "other"),
            {"observation": {"image": [4, 84, 84], "side": [12]}, "n_actions": 4},
            nature,
        )
    with pytest.raises(ConfigError, match=r"teacher.features_dim: 512 \(config has 256\)"):
        copy_pretrained_teacher(src, TeacherFolder(tmp_path / "other"), atari, TeacherConfig(arch="nature", features_dim=256))
    with pytest.raises(CheckpointError, match="not found"):
        copy_pretrained_teacher(tmp_path / "nothing", TeacherFolder(tmp_path / "other"), atari, nature)
    assert not (tmp_path / "other").exists()


class _Payload:
    """Unpickling this object writes a file: the test sees whether anything was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payload_in_policy_pth_is_refused_not_executed(tmp_path):
    _save_zip(tmp_path / "agent.zip")
    with zipfile.ZipFile(tmp_path / "agent.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    marker = tmp_path / "executed"
    th.save({"action_net.weight": _Payload(marker)}, buf)
    members["policy.pth"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_sb3_zip(tmp_path / "evil.zip")
    assert not marker.exists()


def test_missing_or_non_sb3_zip_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_sb3_zip(tmp_path / "nope.zip")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a valid zip"):
        read_sb3_zip(tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not an SB3 model"):
        read_sb3_zip(tmp_path / "other.zip")


@pytest.mark.integration
def test_breakout_pipeline_runs_from_a_user_zip(tmp_path):
    _save_zip(tmp_path / "agent.zip")
    args = [
        "experiments/breakout.yaml",
        "-o",
        f"run_dir={tmp_path}",
        "-o",
        "name=bz",
        "-o",
        f"teacher.sb3_zip={tmp_path / 'agent.zip'}",
        "-o",
        "teacher.pretrained=null",
        "-o",
        "env.eval_kwargs={max_episode_steps: 100}",
        "-o",
        "dataset.train_frames=16",
        "-o",
        "dataset.heldout_frames=4",
        "-o",
        "dataset.max_per_episode=20",
        "-o",
        "distill.steps=2",
        "-o",
        "distill.batch_size=4",
        "-o",
        "distill.students=[{name: digr, lam: 0.01, mask: selective}]",
    ]
    assert main(["distill", *args]) == 0
    run = tmp_path / "bz"
    assert json.loads((run / "teacher" / "teacher.json").read_text())["source"]["sha256"]
    maps = np.load(run / "teacher_saliency_train.npy")
    assert maps.shape == (16, 84, 84) and np.isfinite(maps).all() and maps.max() > 0
    assert (run / "students" / "digr.safetensors").is_file()
