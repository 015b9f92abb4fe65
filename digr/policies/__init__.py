"""Policies: the networks, students, teachers (SB3 adapter, PPO training, import of a user's SB3 zip).

Every policy here follows the contract of :class:`digr.contracts.Policy`:
``policy(image [B,C,H,W] float in [0,1], side [B,K] | None) -> logits [B,A]`` (an SB3 teacher returns normalised
log-probabilities, the same distribution).
"""

from digr.policies.nets import ARCHS, DEFAULT_GRID_CHANNELS, GridCNN, NatureCNN, PolicyNet
from digr.policies.students import load_student, new_student, save_student
from digr.policies.teacher import (
    SB3Teacher,
    TeacherFolder,
    copy_pretrained_teacher,
    install_teacher,
    load_teacher,
    teacher_spaces,
)

__all__ = [
    "ARCHS",
    "DEFAULT_GRID_CHANNELS",
    "GridCNN",
    "NatureCNN",
    "PolicyNet",
    "SB3Teacher",
    "TeacherFolder",
    "copy_pretrained_teacher",
    "install_teacher",
    "load_student",
    "load_teacher",
    "new_student",
    "save_student",
    "teacher_spaces",
]
