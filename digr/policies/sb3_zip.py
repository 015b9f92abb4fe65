"""Bring your own teacher: import a Stable-Baselines3 PPO zip with a CNN policy (e.g. an RL-Zoo Atari agent), unpickled never.

An SB3 ``.zip`` (written by ``model.save``) holds ``data`` — JSON in which Python objects are cloudpickled, with
their plain attributes written beside the pickle — and ``policy.pth``, a ``torch.save`` of the policy's state dict.
:func:`read_sb3_zip` reads only the readable JSON attributes (observation shape and dtype, number of actions, the
policy class name, plain ``policy_kwargs``) and loads ``policy.pth`` with ``torch.load(..., weights_only=True)``;
nothing in the zip is unpickled, so a zip from anywhere is safe to import. :func:`import_sb3_zip` checks that the zip
fits the run's environment and writes the teacher as ``teacher.safetensors`` + ``teacher.json``, the files
:func:`digr.policies.teacher.load_teacher` reads; the pipeline then treats it like a teacher it trained itself.

Supported: SB3 ``PPO`` (also ``A2C``) with ``CnnPolicy`` (``ActorCriticCnnPolicy``: SB3's ``NatureCNN`` of Mnih et al.
2015 + linear actor/critic heads, optional MLP layers) on a ``Box`` image observation ``(C, H, W)`` uint8 and a
``Discrete`` action space — the RL-Zoo Atari setting (``AtariWrapper`` + 4-frame ``VecFrameStack``; SB3 stores the
space channel-first after ``VecTransposeImage``). Preprocessing must match the run's env: DIGR's Atari envs
(``envs/atari.py``) give the DeepMind 84×84×4 stack from ALE's grey screen; SB3's ``AtariWrapper`` converts the RGB
screen with OpenCV, which on Breakout gives identical frames (300 frames compared, measured).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy

from digr.checkpoint import save_module, sha256_file, write_text_atomic
from digr.errors import CheckpointError
from digr.policies.teacher_folder import TeacherFolder

__all__ = ["import_sb3_zip", "read_sb3_zip"]

_CNN_CLASSES = ("ActorCriticCnnPolicy", "CnnPolicy")
_PLAIN_KWARGS = {
    "net_arch",
    "ortho_init",
    "share_features_extractor",
    "normalize_images",
    "features_extractor_kwargs",
    "log_std_init",
}
_ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU")


def _readable(entry, field: str, zip_path: Path):
    """A plain attribute that SB3 wrote beside a pickled object in ``data`` (e.g. ``_shape`` of a space)."""
    if not isinstance(entry, dict) or field not in entry:
        raise CheckpointError(
            f"{zip_path}: SB3 'data' has no readable {field!r}; was it written by stable-baselines3 >= 1.0 `model.save`?"
        )
    return entry[field]


def _mlp_sizes(state: dict[str, th.Tensor], prefix: str) -> list[int]:
    """Hidden sizes of ``mlp_extractor.<prefix>`` from the weight shapes (Linear layers at even indices)."""
    keys = sorted((int(m.group(1)), k) for k in state if (m := re.fullmatch(rf"mlp_extractor\.{prefix}\.(\d+)\.weight", k)))
    return [int(state[k].shape[0]) for _, k in keys]


def read_sb3_zip(zip_path: str | Path) -> tuple[dict, dict[str, th.Tensor]]:
    """Read an SB3 actor-critic CNN zip without unpickling.

    :param zip_path: path of the ``.zip`` written by SB3 ``model.save``.
    :returns: ``(spec, state_dict)``: ``spec`` is the JSON description stored in ``teacher.json``
        (``{"algo": "sb3-zip", "policy": "cnn", "spaces": {"observation": {"image": [C, H, W]}, "n_actions": A},
        "policy_kwargs": {...}, "source": {...}}``); ``state_dict`` maps SB3 parameter names to float32 tensors.
    :raises CheckpointError: the file is missing, not a zip, lacks ``data``/``policy.pth``, is not a CNN actor-critic
        policy (SB3 NatureCNN extractor) on a Box image and Discrete actions, uses an activation outside
        ``torch.nn`` {Tanh, ReLU, ELU, LeakyReLU, GELU, SiLU} or ``policy_kwargs`` DIGR cannot rebuild, or stores
        actor and critic extractors that contradict its ``share_features_extractor``.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise CheckpointError(
            f"SB3 zip {zip_path} not found; give the path of a file written by SB3 `model.save` (teacher.sb3_zip)"
        )
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = set(z.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise CheckpointError(
                    f"{zip_path} is a zip but not an SB3 model (needs 'data' and 'policy.pth', has {sorted(names)})"
                )
            data = json.loads(z.read("data"))
            state = th.load(io.BytesIO(z.read("policy.pth")), map_location="cpu", weights_only=True)
            version = (
                z.read("_stable_baselines3_version").decode().strip() if "_stable_baselines3_version" in names else "unknown"
            )
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{zip_path} is not a valid zip ({e}); re-export it with SB3 `model.save`") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{zip_path}: SB3 'data' is not valid JSON ({e})") from e
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
    ) as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(
            f"{zip_path}: 'policy.pth' is corrupt or not a plain state dict ({e}); DIGR never unpickles it"
        ) from e

    if not isinstance(data, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{zip_path}: SB3 'data' must be a JSON object and 'policy.pth' a state dict (got {type(data).__name__} and "
            f"{type(state).__name__}); re-export the model with SB3 `model.save`"
        )
    try:
        return _parse(zip_path, data, state, version)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:  # a field of the wrong JSON type
        raise CheckpointError(
            f"{zip_path}: SB3 'data' does not have the structure SB3 writes ({type(e).__name__}: {e}); re-export the "
            "model with SB3 `model.save`"
        ) from e


def _parse(zip_path: Path, data: dict, state: dict, version: str) -> tuple[dict, dict[str, th.Tensor]]:
    """The teacher spec and float32 state dict of a read zip (:func:`read_sb3_zip`).

    :raises CheckpointError: as :func:`read_sb3_zip`; other errors for fields of the wrong JSON type."""
    policy_init = str(_readable(data.get("policy_class"), "__init__", zip_path))
    m = re.search(r"function (\w+)\.__init__", policy_init)
    policy_class = m.group(1) if m else "?"
    if policy_class not in _CNN_CLASSES:
        raise CheckpointError(
            f"{zip_path}: policy class {policy_class} is not supported; DIGR imports SB3 CnnPolicy (ActorCriticCnnPolicy) "
            "teachers on image observations (MultiInputPolicy teachers: train them with `digr teacher`)"
        )
    obs = data.get("observation_space")
    if "Box" not in str(_readable(obs, ":type:", zip_path)):
        raise CheckpointError(f"{zip_path}: observation space {obs.get(':type:')} is not a Box image")
    shape = _readable(obs, "_shape", zip_path)
    shape = json.loads(shape) if isinstance(shape, str) else shape
    dtype = _readable(obs, "dtype", zip_path)
    act = data.get("action_space")
    if "Discrete" not in str(_readable(act, ":type:", zip_path)):
        raise CheckpointError(
            f"{zip_path}: action space {act.get(':type:')} is not Discrete; DIGR's Atari teachers have discrete actions"
        )
    n_actions = int(_readable(act, "n", zip_path))
    if len(shape) != 3 or dtype != "uint8":
        raise CheckpointError(f"{zip_path}: observation {shape} {dtype} is not a uint8 (C, H, W) image")

    # SB3 pickles policy_kwargs as a whole when any value is a class (activation_fn, optimizer_class), but writes every
    # first-level entry beside the pickle: plain values as they are, classes as their str()
    kwargs_raw = data.get("policy_kwargs") or {}
    kwargs = {k: v for k, v in kwargs_raw.items() if k not in (":type:", ":serialized:")}
    unknown = (
        set(kwargs) - _PLAIN_KWARGS - {"activation_fn", "optimizer_class", "optimizer_kwargs", "features_extractor_class"}
    )
    if unknown:
        raise CheckpointError(
            f"{zip_path}: policy_kwargs {sorted(unknown)} are not supported (supported: {sorted(_PLAIN_KWARGS)}, "
            "activation_fn, optimizer_class, optimizer_kwargs)"
        )
    extractor = str(kwargs.get("features_extractor_class", "NatureCNN"))
    if "NatureCNN" not in extractor:
        raise CheckpointError(
            f"{zip_path}: features extractor {extractor} is not SB3's NatureCNN, the only CNN extractor DIGR rebuilds"
        )
    activation = "Tanh"  # SB3's default for the MLP layers
    if "activation_fn" in kwargs:
        m = re.fullmatch(r"<class 'torch\.nn\.modules\.activation\.(\w+)'>", str(kwargs["activation_fn"]))
        if m is None or m.group(1) not in _ACTIVATIONS:
            raise CheckpointError(f"{zip_path}: activation_fn {kwargs['activation_fn']} is not one of torch.nn {_ACTIVATIONS}")
        activation = m.group(1)
    try:
        state = {k: v.float() for k, v in state.items()}
        features_dim = int(state["features_extractor.linear.0.weight"].shape[0])
        first_conv = state["features_extractor.cnn.0.weight"]
    except (KeyError, AttributeError) as e:
        raise CheckpointError(
            f"{zip_path}: policy.pth has no NatureCNN features extractor ({e}); "
            "only SB3's default CnnPolicy extractor is supported"
        ) from e
    if first_conv.shape[1] != shape[0]:
        raise CheckpointError(
            f"{zip_path}: first conv expects {first_conv.shape[1]} channels but the stored observation is {shape}"
        )
    share = bool(kwargs.get("share_features_extractor", True))
    # a shared extractor is stored under three prefixes with equal tensors; separate ones differ (checked, since a wrong
    # flag would load the critic's CNN into the actor without any missing or unexpected key)
    vf_same = all(
        th.equal(v, state.get("vf_features_extractor." + k[len("features_extractor.") :], v + 1))
        for k, v in state.items()
        if k.startswith("features_extractor.")
    )
    if share != vf_same:
        raise CheckpointError(
            f"{zip_path}: share_features_extractor={share} but the stored actor and critic extractors are "
            f"{'equal' if vf_same else 'different'}; the zip is inconsistent"
        )
    net_arch = {"pi": _mlp_sizes(state, "policy_net"), "vf": _mlp_sizes(state, "value_net")}
    spec = {
        "algo": "sb3-zip",
        "policy": "cnn",
        "spaces": {"observation": {"image": [int(s) for s in shape]}, "n_actions": n_actions},
        "policy_kwargs": {
            "features_dim": features_dim,
            "net_arch": net_arch,
            "share_features_extractor": share,
            "normalize_images": bool(kwargs.get("normalize_images", True)),
            "activation_fn": activation,
        },
        "source": {
            "path": str(zip_path),
            "sha256": sha256_file(zip_path),
            "sb3_version": version,
            "num_timesteps": int(data["num_timesteps"]) if isinstance(data.get("num_timesteps"), int) else None,
        },
    }
    return spec, state


def import_sb3_zip(
    zip_path: str | Path, out: TeacherFolder, image_shape: tuple[int, int, int], n_actions: int, has_side: bool = False
) -> Path:
    """Check an SB3 CNN zip against the run's env and write it as a DIGR teacher.

    :param zip_path: SB3 ``.zip`` (see :func:`read_sb3_zip`).
    :param out: the run's teacher folder; gets ``teacher.safetensors`` and ``teacher.json`` (atomic writes).
    :param image_shape: the env's ``observation_space["image"].shape``, ``(C, H, W)``.
    :param n_actions: the env's ``action_space.n``.
    :param has_side: whether the env's observation also has a ``side`` vector (refused: a CnnPolicy takes the image only).
    :returns: path of ``teacher.safetensors``.
    :raises CheckpointError: unreadable zip (see :func:`read_sb3_zip`), a zip whose observation shape or action count
        differs from the env's (the message gives both; pick the env/wrappers the agent was trained with), an env with a
        side input, or weights that do not fit the rebuilt policy.
    """
    spec, state = read_sb3_zip(zip_path)
    if has_side:
        raise CheckpointError(
            f"{zip_path}: the env also gives a side input, which an SB3 CnnPolicy on a Box image cannot take"
        )
    want = spec["spaces"]["observation"]["image"]
    if tuple(want) != tuple(image_shape) or spec["spaces"]["n_actions"] != n_actions:
        raise CheckpointError(
            f"{zip_path} expects observations {tuple(want)} and {spec['spaces']['n_actions']} actions, but the env gives "
            f"{tuple(image_shape)} and {n_actions}; use the env id and wrappers the agent was trained with (env.id)"
        )
    policy = build_cnn_policy(spec)
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"{zip_path}: weights do not fit SB3's ActorCriticCnnPolicy ({e})") from e
    if missing or unexpected:
        raise CheckpointError(
            f"{zip_path}: weights do not fit SB3's ActorCriticCnnPolicy (missing {missing}, unexpected {unexpected})"
        )
    save_module(policy, out.weights)
    write_text_atomic(out.spec, json.dumps(spec, indent=2))
    return out.weights


def build_cnn_policy(spec: dict) -> ActorCriticCnnPolicy:
    """SB3 ``ActorCriticCnnPolicy`` (NatureCNN + heads) on a Box uint8 image, from a ``teacher.json`` spec of
    :func:`digr.policies.sb3_zip.read_sb3_zip` (untrained weights; load them with :func:`digr.checkpoint.load_module`).

    :raises KeyError, TypeError: a spec without the fields ``read_sb3_zip`` writes.
    """
    kw = spec["policy_kwargs"]
    obs_space = spaces.Box(0, 255, tuple(spec["spaces"]["observation"]["image"]), np.uint8)
    return ActorCriticCnnPolicy(
        obs_space,
        spaces.Discrete(spec["spaces"]["n_actions"]),
        lr_schedule=lambda _: 0.0,
        net_arch=dict(kw["net_arch"]),
        features_extractor_kwargs={"features_dim": kw["features_dim"]},
        share_features_extractor=kw["share_features_extractor"],
        normalize_images=kw["normalize_images"],
        activation_fn=getattr(th.nn, kw.get("activation_fn", "Tanh")),
    )
