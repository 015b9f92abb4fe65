"""Typed experiment configuration, loaded from YAML with field-by-field validation.

Every section is a dataclass; :func:`load_config` rejects unknown fields (suggesting the closest valid name), wrong
types and values outside the allowed set, naming the offending field path (``distill.students[1].mask``) and what
is allowed. Defaults reproduce the MiniGrid fetch-by-colour experiment of ``experiments/minigrid_fetch.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError", "StageError", "EnvConfig", "TeacherConfig", "DatasetConfig", "PerturbationConfig", "MaskConfig", "StudentSpec",
    "DistillConfig", "EvalConfig", "SaliencyBenchConfig", "AttackConfig", "SALIENCY_BENCH_METHODS", "ExperimentConfig",
    "validate_attack_spec", "validate_attack_options", "load_config", "config_from_dict", "config_to_dict",
]


class ConfigError(ValueError):
    """A config field is unknown, has the wrong type or an invalid value. The message names the field and the fix."""


class StageError(RuntimeError):
    """A pipeline stage cannot run: its prerequisites are missing, or its artefacts were made with another config."""


@dataclass
class EnvConfig:
    """Which environment to run.

    :param id: gymnasium id, optionally prefixed by the module that registers it: ``"envs.minigrid:DIGR/FetchColorGreen-8x8-v0"``.
    :param kwargs: keyword arguments for ``gymnasium.make``.
    :param eval_id: env for collecting states, evaluation and attacks when it differs from the training env (Atari:
        full games with true scores instead of per-life episodes with clipped rewards); None = ``id``.
    :param eval_kwargs: keyword arguments for ``eval_id`` (None = ``kwargs``).
    """

    id: str = "envs.minigrid:DIGR/FetchColorGreen-8x8-v0"
    kwargs: dict = field(default_factory=dict)
    eval_id: str | None = None
    eval_kwargs: dict | None = None


@dataclass
class TeacherConfig:
    """SB3 PPO teacher training (hyperparameters as in SB3's ``PPO``; timesteps are environment steps).

    ``arch``: ``grid`` (:class:`digr.nets.GridCNN`; ``cell`` is the side, in pixels, of the first conv layer's kernel
    and stride, 8 = one output per MiniGrid cell; ``channels`` are its conv widths, the cell conv then 3×3 convs) or ``nature`` (the Nature-DQN CNN of Atari agents, via SB3's
    ``CombinedExtractor``/``NatureCNN``; ``features_dim`` 512 as RL-Zoo). ``lr_schedule`` / ``clip_schedule``:
    ``constant`` or ``linear`` (decays to 0 over ``total_timesteps``, RL-Zoo Atari). ``checkpoint_every`` is in
    environment steps; training resumes from the last checkpoint.

    ``sb3_zip``: path of a user's SB3 PPO ``CnnPolicy`` zip (e.g. an RL-Zoo Atari agent) to import as the teacher
    instead of training one (read without unpickling, see :mod:`digr.sb3_zip`); the training fields are then unused.
    ``pretrained``: a folder holding a DIGR teacher (``teacher.safetensors`` + ``teacher.json`` [+ ``curve.csv``,
    ``provenance.json``], as written by ``digr teacher``), e.g. a committed teacher under ``experiments/teachers/``; it is
    copied into the run instead of training. Relative paths (also ``sb3_zip``) are read from the current directory.
    The architecture fields (``arch``, ``cell``, ``features_dim``, ``channels``) must describe the ready teacher: the
    students are built from them.
    """

    total_timesteps: int = 204_800
    n_envs: int = 16
    n_steps: int = 128
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 5e-4
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    max_grad_norm: float = 0.5
    cell: int = 8
    features_dim: int = 256
    checkpoint_every: int = 50_000
    arch: Literal["grid", "nature"] = "grid"
    lr_schedule: Literal["constant", "linear"] = "constant"
    clip_schedule: Literal["constant", "linear"] = "constant"
    sb3_zip: str | None = None
    pretrained: str | None = None
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])


@dataclass
class DatasetConfig:
    """States collected from teacher rollouts (teacher samples its actions at ``temperature`` for state coverage).

    ``train_frames`` and ``heldout_frames`` are counts of states; held-out states come from different episode seeds.
    ``max_per_episode`` (None = no cap) keeps at most that many states per episode, drawn uniformly from the episode.
    """

    train_frames: int = 8_000
    heldout_frames: int = 512
    temperature: float = 1.0
    max_per_episode: int | None = None


@dataclass
class PerturbationConfig:
    """Greydanus et al. 2018 perturbation saliency, in pixels of the policy's image.

    Reference values on 80–84 px Atari frames are σ_mask = 5, σ_blur = 3, stride 5; the defaults scale them to
    64 px MiniGrid renders (×0.8). ``internal_batch_size`` bounds perturbed images per forward pass (memory).
    """

    sigma_mask: float = 4.0
    sigma_blur: float = 2.4
    stride: int = 4
    internal_batch_size: int = 256  # measured on 2 CPU cores: 256 runs at the plain batched-forward rate, 4096 at half of it (cache)


@dataclass
class MaskConfig:
    """Selective mask M(s) = 1 on non-salient pixels (see :func:`digr.masks.selective_mask`).

    ``kappa`` in [0, 1] thresholds the per-frame max-normalised teacher saliency; ``top_p`` (percent, optional)
    keeps the top-p % pixels salient instead; ``dilate`` grows the salient set by that many pixels.
    """

    kappa: float = 0.1
    top_p: float | None = None
    dilate: int = 0


@dataclass
class StudentSpec:
    """One student to distil. ``mask``: ``selective`` (DIGR), ``all`` (M ≡ 1, non-selective IGR) or ``none``."""

    name: str = "digr"
    lam: float = 0.01
    mask: Literal["selective", "all", "none"] = "selective"


def _default_students() -> list[StudentSpec]:
    return [StudentSpec("plain", 0.0, "none"), StudentSpec("igr_all", 0.01, "all"), StudentSpec("digr", 0.01, "selective")]


@dataclass
class DistillConfig:
    """Student training: KL(π_T(·|s;τ) ‖ π_S(·|s)) + λ·‖M ⊙ ∇_s g‖² (see :mod:`digr.distill`).

    ``target`` picks g: ``log_prob`` = log π_S(a*|s), a* = argmax π_T (default); ``sum_log_prob`` = Σ_a log π_S(a|s)
    (Ross et al. 2017); ``logit`` = the student's logit of a*.

    DAgger (Ross, Gordon, Bagnell 2011, "A Reduction of Imitation Learning and Structured Prediction to No-Regret
    Online Learning", AISTATS; for distillation see Czarnecki et al. 2019, "Distilling Policy Distillation"): after the
    first ``steps``, each of ``dagger_rounds`` rounds rolls the student out greedily, keeps ``dagger_frames`` of the
    states it visits (at most ``dataset.max_per_episode`` per episode), labels them with the teacher's logits (and its
    perturbation maps for selective masks), adds them to the student's data and trains ``steps`` more. Every student of
    the run gets the same rounds. 0 = plain distillation from teacher states only.

    ``penalty_batch_size`` (None = the whole minibatch) estimates the input-gradient penalty on that many uniformly
    drawn rows of each minibatch: unbiased, and the double backpropagation costs k/B of the full batch.
    """

    steps: int = 4_000
    batch_size: int = 64
    learning_rate: float = 3e-4
    tau: float = 1.0
    target: Literal["log_prob", "sum_log_prob", "logit"] = "log_prob"
    checkpoint_every: int = 500
    dagger_rounds: int = 0
    dagger_frames: int = 1_000
    penalty_batch_size: int | None = None
    students: list[StudentSpec] = field(default_factory=_default_students)


@dataclass
class EvalConfig:
    """Evaluation: returns over ``episodes`` episodes (seeds ``seed``, ``seed+1``, …), agreement on held-out frames,
    latency (median of ``latency_repeats`` timed calls) and a figure of ``figure_frames`` frames."""

    episodes: int = 100
    seed: int = 100_000
    top_percent: float = 10.0
    latency_repeats: int = 20
    latency_batch: int = 32
    figure_frames: int = 6
    deterministic: bool = True


SALIENCY_BENCH_METHODS = ("gradient", "grad_x_input", "integrated_gradients", "smoothgrad", "smoothgrad_sq", "vargrad", "adaptgrad",
                          "mollify_box", "mollify_laplace", "mollify_bump", "occlusion", "perturbation")


@dataclass
class SaliencyBenchConfig:
    """``digr saliency-bench``: every method in ``methods`` on the teacher and each student, on ``frames`` held-out frames.

    ``n_samples``: N of the sampling methods (SmoothGrad, SmoothGrad², VarGrad, AdaptGrad, mollifiers); ``noise_level``:
    their σ relative to the [0, 1] pixel range; ``confidence``: AdaptGrad's c; ``ig_steps``/``ig_baseline``: integrated
    gradients; ``occlusion_window``/``occlusion_stride``: pixels. Latency: median of ``latency_repeats`` calls at batch 1
    and ``latency_batch``. ``deletion_steps``: points of the deletion/insertion curves; ``sanity_frames``: frames of the
    weight-randomisation sanity check. Perturbation uses the run's ``perturbation`` section.
    """

    frames: int = 128
    methods: list[str] = field(default_factory=lambda: list(SALIENCY_BENCH_METHODS))
    n_samples: int = 50
    noise_level: float = 0.15
    confidence: float = 0.95
    ig_steps: int = 50
    ig_baseline: Literal["black", "blur", "uniform"] = "black"
    occlusion_window: int = 8
    occlusion_stride: int = 4
    latency_repeats: int = 5
    latency_batch: int = 32
    deletion_steps: int = 16
    sanity_frames: int = 32
    in_run: bool = True


@dataclass
class AttackConfig:
    """``digr attack``: ℓ∞ observation attacks (:mod:`digr.attacks`) on the teacher and every student.

    ``attacks``: names for :func:`digr.attacks.make_attack` (random, fgsm, pgd10, pgd50, mad, critic, ...); ``eps``:
    budgets in [0, 1] pixel units, as numbers or strings such as ``"1/255"`` (list ``0`` to get clean returns under the
    same protocol; every attack is the identity there). ``options``: attack name → keyword arguments for
    :func:`digr.attacks.make_attack`, e.g. ``{pgd50: {step_size: 0.00392}}`` (α in [0, 1] units; default 2.5·ε/K) or
    ``{pgd10: {random_start: false}}``; they are recorded in each row's ``attack_config``. Closed loop: ``episodes``
    full episodes per (agent, attack, ε) with seeds ``evaluate.seed + i`` (None = ``evaluate.episodes``). Open loop: ``open_loop_frames`` held-out states. The command-line flags
    ``--attacks``/``--eps``/``--episodes`` override these. ``n_parallel`` closed-loop episodes are stepped in
    lockstep so each step's observations are attacked as one batch. ``agents``: which of ``teacher`` and the student
    names to attack (None = all; ``--agents`` overrides), to spend a slow attack's budget on the comparison that matters.
    """

    attacks: list[str] = field(default_factory=lambda: ["random", "fgsm", "pgd10", "pgd50", "mad"])
    eps: list[float | str] = field(default_factory=lambda: ["1/255", "3/255", "5/255"])
    episodes: int | None = None
    open_loop_frames: int = 512
    batch_size: int = 256
    n_parallel: int = 50
    agents: list[str] | None = None
    options: dict = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """A whole experiment. Artefacts go to ``{run_dir}/{name}/``."""

    name: str = "minigrid_fetch"
    seed: int = 0
    run_dir: str = "runs"
    device: str = "cpu"
    track: bool = False
    wandb_project: str = "digr"
    env: EnvConfig = field(default_factory=EnvConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    saliency_bench: SaliencyBenchConfig = field(default_factory=SaliencyBenchConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)

    @property
    def run_path(self) -> Path:
        """``Path(run_dir) / name``."""
        return Path(self.run_dir) / self.name


_POSITIVE = {
    "teacher.total_timesteps", "teacher.n_envs", "teacher.n_steps", "teacher.batch_size", "teacher.n_epochs",
    "teacher.learning_rate", "teacher.cell", "teacher.features_dim", "teacher.checkpoint_every",
    "dataset.train_frames", "dataset.heldout_frames", "dataset.temperature", "dataset.max_per_episode", "perturbation.sigma_mask",
    "perturbation.sigma_blur", "perturbation.stride", "perturbation.internal_batch_size", "distill.steps",
    "distill.batch_size", "distill.learning_rate", "distill.dagger_frames", "distill.penalty_batch_size", "distill.tau", "distill.checkpoint_every", "evaluate.episodes",
    "evaluate.latency_repeats", "evaluate.latency_batch", "evaluate.top_percent",
    "saliency_bench.frames", "saliency_bench.n_samples", "saliency_bench.ig_steps", "saliency_bench.occlusion_window",
    "saliency_bench.occlusion_stride", "saliency_bench.latency_repeats", "saliency_bench.latency_batch", "saliency_bench.deletion_steps",
    "saliency_bench.sanity_frames", "saliency_bench.noise_level", "attack.episodes", "attack.open_loop_frames", "attack.batch_size", "attack.n_parallel",
}


def _check_type(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_check_type(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {tp}")  # a programming error in this module


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of fields, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        fpath = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config field {fpath!r}.{hint} Allowed fields here: {names}")
        kwargs[key] = _check_type(value, hints[key], fpath)
        if fpath in _POSITIVE and kwargs[key] is not None and kwargs[key] <= 0:
            raise ConfigError(f"{fpath}: must be > 0, got {kwargs[key]!r}")
    return cls(**kwargs)


def validate_attack_spec(attacks: list[str], eps: list, names: tuple[str, str] = ("attack.attacks", "attack.eps")) -> None:
    """Check attack names (:func:`digr.attacks.make_attack`) and budgets (:func:`digr.attacks.parse_eps`).

    :param names: how the two lists are called in messages (config fields, or command-line flags).
    :raises ConfigError: the first bad entry, named as ``{names[1]}[i]`` / ``{names[0]}[i]``.
    """
    from digr.attacks import make_attack, parse_eps

    for i, e in enumerate(eps):
        try:
            parse_eps(e)
        except ValueError as err:
            raise ConfigError(f"{names[1]}[{i}]: {err}") from err
    for i, name in enumerate(attacks):
        try:
            make_attack(name, 0.0)
        except ValueError as err:
            raise ConfigError(f"{names[0]}[{i}]: {err}") from err


def validate_attack_options(options: dict, field_name: str = "attack.options") -> None:
    """Check ``attack.options``: every key an attack name, every value a mapping of arguments that attack accepts.

    :raises ConfigError: the first bad entry, named as ``attack.options.<name>``, with the reason from
        :func:`digr.attacks.make_attack` (unknown attack, an argument it does not take, a bad step size, ...).
    """
    from digr.attacks import make_attack

    for name, kwargs in options.items():
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{field_name}.{name}: expected a mapping of keyword arguments such as {{step_size: 0.004}}, "
                              f"got {kwargs!r}")
        try:
            make_attack(str(name), "1/255", **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{field_name}.{name}: {err}") from err


def validate_attack_agents(agents: list[str] | None, students: list[str], field_name: str = "attack.agents") -> None:
    """Check that every attacked agent is ``teacher`` or a student name.

    :raises ConfigError: an unknown or repeated name (the message lists the allowed ones).
    """
    if agents is None:
        return
    allowed = ["teacher", *students]
    for a in agents:
        if a not in allowed:
            raise ConfigError(f"{field_name}: unknown agent {a!r}; choose from {allowed}")
    if not agents or len(set(agents)) != len(agents):
        raise ConfigError(f"{field_name}: give each agent once, at least one, from {allowed}; got {agents}")


def _validate(cfg: ExperimentConfig) -> None:
    if not 0.0 <= cfg.mask.kappa <= 1.0:
        raise ConfigError(f"mask.kappa: must be in [0, 1], got {cfg.mask.kappa}")
    if cfg.mask.top_p is not None and not 0.0 < cfg.mask.top_p < 100.0:
        raise ConfigError(f"mask.top_p: a percentage in (0, 100), got {cfg.mask.top_p}")
    if cfg.mask.dilate < 0:
        raise ConfigError(f"mask.dilate: must be >= 0 pixels, got {cfg.mask.dilate}")
    if cfg.distill.dagger_rounds < 0:
        raise ConfigError(f"distill.dagger_rounds: must be >= 0, got {cfg.distill.dagger_rounds}")
    names = [s.name for s in cfg.distill.students]
    if len(set(names)) != len(names):
        raise ConfigError(f"distill.students: names must be unique, got {names}")
    for i, s in enumerate(cfg.distill.students):
        if s.lam < 0:
            raise ConfigError(f"distill.students[{i}].lam: must be >= 0, got {s.lam}")
        if s.mask == "none" and s.lam != 0:
            raise ConfigError(f"distill.students[{i}]: mask 'none' needs lam 0 (got {s.lam}); use mask 'all' or 'selective'")
        if not s.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"distill.students[{i}].name: {s.name!r} must be letters, digits, '_' or '-' (it names files)")
    for i, m in enumerate(cfg.saliency_bench.methods):
        if m not in SALIENCY_BENCH_METHODS:
            close = difflib.get_close_matches(m, SALIENCY_BENCH_METHODS, n=1)
            raise ConfigError(f"saliency_bench.methods[{i}]: unknown method {m!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                              f"choose from {list(SALIENCY_BENCH_METHODS)}")
    validate_attack_spec(cfg.attack.attacks, cfg.attack.eps)
    validate_attack_options(cfg.attack.options)
    validate_attack_agents(cfg.attack.agents, names)
    if not 0.0 < cfg.saliency_bench.confidence < 1.0:
        raise ConfigError(f"saliency_bench.confidence: must be in (0, 1), got {cfg.saliency_bench.confidence}")
    if not cfg.teacher.channels or min(cfg.teacher.channels) < 1:
        raise ConfigError(f"teacher.channels: give at least one positive conv width, got {cfg.teacher.channels}")
    if cfg.teacher.sb3_zip and cfg.teacher.arch != "nature":
        raise ConfigError("teacher.arch: an SB3 CnnPolicy zip (teacher.sb3_zip) is a Nature-DQN CNN; set teacher.arch: nature "
                          "(the students are built with the teacher's architecture)")
    if cfg.teacher.sb3_zip and cfg.teacher.pretrained:
        raise ConfigError("teacher.sb3_zip and teacher.pretrained: give at most one source for a ready teacher")
    if cfg.teacher.batch_size > cfg.teacher.n_envs * cfg.teacher.n_steps:
        raise ConfigError("teacher.batch_size: must be <= teacher.n_envs * teacher.n_steps (one rollout)")
    if cfg.device != "cpu" and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device: {cfg.device!r} is not allowed; use 'cpu' or 'cuda[:N]'")
    if not cfg.name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"name: {cfg.name!r} must be letters, digits, '_' or '-' (it names the run folder)")


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a plain mapping.

    :raises ConfigError: unknown field, wrong type or invalid value; the message names the field and what is allowed.
    """
    cfg = _build(ExperimentConfig, data, "")
    _validate(cfg)
    return cfg


def _set_override(data: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment config, apply ``key.sub=value`` overrides (values parsed as YAML), and validate it.

    :raises FileNotFoundError: the file does not exist.
    :raises ConfigError: malformed YAML, a malformed override, or an invalid field (see :func:`config_from_dict`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found; see experiments/ for examples")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value, e.g. teacher.total_timesteps=100000")
        key, raw = item.split("=", 1)
        _set_override(data, key.strip(), raw)
    return config_from_dict(data)


def config_to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-safe) view of a config dataclass or section."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
