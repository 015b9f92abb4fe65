"""Students: a :class:`digr.policies.nets.PolicyNet` built with the teacher's architecture, saved as safetensors weights
plus a JSON constructor spec (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch as th

from digr.checkpoint import load_state_dict, save_state_dict, write_text_atomic
from digr.errors import CheckpointError
from digr.policies.nets import PolicyNet

__all__ = ["load_student", "new_student", "save_student"]


def new_student(
    image_shape: tuple[int, int, int], n_actions: int, side_dim: int, arch, seed: int, attention: str = "none"
) -> PolicyNet:
    """A freshly initialised student whose body has the teacher's architecture; its initial weights depend on ``seed``
    only (not on the global RNG state, i.e. not on which stages ran before in the same process).

    :param image_shape: ``(C, H, W)``. :param n_actions: A. :param side_dim: K (0 for none).
    :param arch: the teacher config section (``arch``, ``cell``, ``features_dim``, ``channels`` are read).
    :param attention: ``none`` or a built-in attention map on that architecture (:data:`digr.policies.attention.ATTENTIONS`).
    :raises ValueError: an image shape the architecture cannot take, or an unknown ``attention``.
    """
    with th.random.fork_rng():
        th.manual_seed(seed)
        return PolicyNet(
            tuple(image_shape),
            n_actions,
            side_dim,
            arch.cell,
            arch.features_dim,
            arch=arch.arch,
            channels=arch.channels,
            attention=attention,
        )


def save_student(student: PolicyNet, path: str | Path) -> None:
    """Save a student as ``path`` (safetensors weights) plus ``path.json`` (constructor spec). Atomic writes."""
    path = Path(path)
    save_state_dict(student.state_dict(), path)
    write_text_atomic(path.with_suffix(".json"), json.dumps(student.spec, indent=2))


def load_student(path: str | Path, device: str = "cpu") -> PolicyNet:
    """Rebuild a student saved by :func:`save_student` (no unpickling), in eval mode on ``device``.

    :raises CheckpointError: missing or corrupt weights/spec, or weights that do not fit the spec.
    """
    path = Path(path)
    spec_path = path.with_suffix(".json")
    if not spec_path.is_file():
        raise CheckpointError(f"student spec {spec_path} is missing; re-run `digr distill` to recreate the student")
    try:
        spec = json.loads(spec_path.read_text())
        student = PolicyNet(**spec)
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"student spec {spec_path} is corrupt ({e}); delete it and re-run `digr distill`") from e
    try:
        student.load_state_dict(load_state_dict(path))
    except RuntimeError as e:
        raise CheckpointError(f"weights {path} do not match spec {spec_path}: {e}") from e
    return student.to(device).eval()
