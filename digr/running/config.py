"""Typed experiment configuration on pydantic v2: YAML files, ``-o key.sub=value`` overrides, validated field by field.

Every field carries its help text, unit and constraints (:func:`_field`), so ``digr config CONFIG`` prints the
resolved config with each field's meaning, unit and default (:func:`describe_config`). Bad input raises
:class:`digr.errors.ConfigError` naming the field path (``distill.students[1].mask``) and what is allowed: unknown
fields (with the closest valid name), wrong types, values outside their range or set, non-finite numbers, and the
cross-field rules of :meth:`ExperimentConfig._cross_checks`. Defaults reproduce the MiniGrid fetch-by-colour
experiment of ``experiments/minigrid_fetch.yaml``.

Why pydantic: it is the maintained standard for typed, validated settings in Python; field metadata (description,
constraints, JSON schema) lives on the field itself, which the hand-written validator it replaces could not offer.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digr.errors import ConfigError

__all__ = [
    "AttackConfig",
    "ConfigError",
    "DatasetConfig",
    "DistillConfig",
    "EnvConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ImitationConfig",
    "MaskConfig",
    "PerturbationConfig",
    "SaliencyBenchConfig",
    "StudentSpec",
    "TeacherConfig",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "load_config",
    "read_config_file",
    "validate_attack_agents",
    "validate_attack_spec",
]


def _field(default: Any = ..., help: str = "", unit: str | None = None, *, factory=None, **constraints) -> Any:
    """A model field with its help text, its unit (shown by ``digr config``) and pydantic constraints (``gt``, ``ge``,
    ``le``, ``pattern``...)."""
    extra = {"unit": unit} if unit else None
    if factory is not None:
        return Field(default_factory=factory, description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


PositiveInt = Annotated[int, Field(gt=0)]


def _check_saliency_method(name: str) -> str:
    from digr.saliency import METHODS

    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        raise ValueError(
            f"unknown method {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; choose from {list(METHODS)}"
        )
    return name


def _check_eps(value: float | str) -> float | str:
    from digr.attacks import parse_eps

    parse_eps(value)
    return value


def _check_attack(name: str) -> str:
    from digr.attacks import make_attack

    make_attack(name, 0.0)
    return name


def _default_bench_methods() -> list[str]:
    from digr.saliency import METHODS

    return list(METHODS)


class Section(BaseModel):
    """Base of every config section: unknown fields are refused, numbers must be finite and true/false is no number."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError("true/false is not a number")
        return value


class EnvConfig(Section):
    """Which environment to run (adapters in ``envs/``; contract in :mod:`digr.contracts`)."""

    id: str = _field(
        "envs.minigrid:DIGR/FetchColorGreen-8x8-v0", "gymnasium id, prefixed by the module that registers it ('module:EnvId')"
    )
    kwargs: dict = _field(help="keyword arguments for gymnasium.make", factory=dict)
    eval_id: str | None = _field(
        None,
        "env for states, evaluation and attacks when it differs from the training env "
        "(Atari: full games with true scores); null = id",
    )
    eval_kwargs: dict | None = _field(None, "keyword arguments for eval_id; null = kwargs")

    def make_fn(self, evaluation: bool = False, overrides: dict | None = None) -> Callable[[], Any]:
        """A function that makes one env of the training id (or, with ``evaluation``, of ``eval_id`` with
        ``eval_kwargs``, falling back to ``id`` and ``kwargs``) through :func:`digr.contracts.make_env`; ``overrides``
        are merged over those kwargs (an evaluation protocol, e.g. sticky actions)."""
        from digr.contracts import make_env

        if not evaluation:
            return functools.partial(make_env, self.id, **{**self.kwargs, **(overrides or {})})
        kwargs = self.kwargs if self.eval_kwargs is None else self.eval_kwargs
        return functools.partial(make_env, self.eval_id or self.id, **{**kwargs, **(overrides or {})})


class ImitationConfig(Section):
    """Behaviour cloning + DAgger from a privileged expert (``teacher.kind: imitation``, :mod:`digr.policies.imitation`)."""

    bc_episodes: int = _field(16, "round 0: episodes the expert drives (behaviour cloning data)", "episodes", gt=0)
    dagger_rounds: int = _field(4, "DAgger rounds after behaviour cloning (0 = behaviour cloning only)", ge=0)
    dagger_episodes: int = _field(10, "episodes per DAgger round, driven by the expert/learner mixture", "episodes", gt=0)
    beta: float = _field(0.5, "DAgger mixture: round r lets the expert act with probability beta^r", ge=0, le=1)
    epochs: int = _field(3, "passes over the aggregate dataset after each round", gt=0)
    batch_size: int = _field(128, "minibatch size", "states", gt=0)
    learning_rate: float = _field(3e-4, "Adam learning rate", gt=0)
    label_smoothing: float = _field(
        0.1, "cross-entropy label smoothing: keeps the teacher's action distribution from collapsing to one-hot", ge=0, lt=1
    )


class TeacherConfig(Section):
    """The teacher: SB3 PPO training (hyperparameters as SB3's ``PPO``), imitation of a privileged expert
    (``kind: imitation``), or a ready teacher (``sb3_zip``, ``pretrained``)."""

    kind: Literal["ppo", "imitation"] = _field(
        "ppo", "how `digr teacher` trains it: ppo (SB3 PPO) or imitation (behaviour cloning + DAgger from teacher.expert)"
    )
    expert: str | None = _field(
        None,
        "kind imitation: the privileged expert as 'module:Class' with act(info) -> action, "
        "e.g. 'envs.carracing:PurePursuitExpert'",
    )
    expert_kwargs: dict = _field(help="keyword arguments for the expert's class", factory=dict)
    imitation: ImitationConfig = _field(help="kind imitation: behaviour cloning and DAgger", factory=ImitationConfig)

    total_timesteps: int = _field(204_800, "PPO training length", "env steps", gt=0)
    n_envs: int = _field(16, "parallel training environments", gt=0)
    n_steps: int = _field(128, "steps per env per rollout", "env steps", gt=0)
    batch_size: int = _field(256, "PPO minibatch size (at most n_envs * n_steps)", "env steps", gt=0)
    n_epochs: int = _field(10, "PPO epochs per rollout", gt=0)
    learning_rate: float = _field(5e-4, "Adam learning rate (start value with lr_schedule: linear)", gt=0)
    ent_coef: float = _field(0.01, "entropy bonus coefficient", ge=0)
    vf_coef: float = _field(0.5, "value loss coefficient", ge=0)
    gamma: float = _field(0.99, "discount factor", gt=0, le=1)
    gae_lambda: float = _field(0.95, "GAE λ", ge=0, le=1)
    clip_range: float = _field(0.2, "PPO clip range (start value with clip_schedule: linear)", gt=0)
    max_grad_norm: float = _field(0.5, "gradient-norm clip", gt=0)
    cell: int = _field(
        8, "grid arch: side of the first conv's kernel and stride (8 = one output per MiniGrid cell)", "pixels", gt=0
    )
    features_dim: int = _field(256, "width of the features layer (512 for the Nature CNN, as RL-Zoo)", gt=0)
    checkpoint_every: int = _field(50_000, "resumable checkpoint interval", "env steps", gt=0)
    arch: Literal["grid", "nature"] = _field(
        "grid", "network body: grid (GridCNN, one feature vector per cell) or nature (Nature-DQN CNN, Atari)"
    )
    lr_schedule: Literal["constant", "linear"] = _field(
        "constant", "learning-rate schedule; linear decays to 0 over total_timesteps (RL-Zoo Atari)"
    )
    clip_schedule: Literal["constant", "linear"] = _field(
        "constant", "clip-range schedule; linear decays to 0 over total_timesteps"
    )
    sb3_zip: str | None = _field(
        None,
        "a user's SB3 PPO CnnPolicy zip to import as the teacher instead of training "
        "(read without unpickling; needs arch: nature)",
    )
    pretrained: str | None = _field(
        None,
        "a folder with a DIGR teacher (teacher.safetensors + teacher.json) to copy in instead of training, "
        "e.g. experiments/teachers/breakout",
    )
    channels: list[PositiveInt] = _field(
        help="grid arch: widths of the cell conv and the 3x3 convs after it", factory=lambda: [32, 64, 64], min_length=1
    )


class DatasetConfig(Section):
    """States collected from teacher rollouts (the teacher samples its actions at ``temperature`` for state coverage)."""

    train_frames: int = _field(8_000, "training states", "states", gt=0)
    heldout_frames: int = _field(512, "held-out states (other episode seeds) for evaluation", "states", gt=0)
    temperature: float = _field(1.0, "the teacher samples from softmax(logits / temperature) while collecting", gt=0)
    max_per_episode: PositiveInt | None = _field(
        None, "at most this many states per episode, drawn uniformly; null = no cap", "states"
    )
    heldout_max_per_episode: PositiveInt | None = _field(
        None, "the held-out split's cap per episode (more tracks in a small held-out set); null = max_per_episode", "states"
    )

    def cap(self, split: str) -> int | None:
        """States per episode at most for ``split`` ("train" or "heldout"; DAgger rounds use the train cap)."""
        return (self.heldout_max_per_episode or self.max_per_episode) if split == "heldout" else self.max_per_episode


class PerturbationConfig(Section):
    """Greydanus et al. 2018 perturbation saliency of the teacher (the reference map and the mask's source)."""

    sigma_mask: float = _field(4.0, "std of the Gaussian mask (reference 5 on 80-84 px Atari frames)", "pixels", gt=0)
    sigma_blur: float = _field(2.4, "std of the blur that fills the masked region (reference 3)", "pixels", gt=0)
    stride: int = _field(
        4, "grid stride between mask centres (reference 5); cost = ceil(H/d)*ceil(W/d) + 1 forward passes", "pixels", gt=0
    )
    internal_batch_size: int = _field(
        256, "at most this many perturbed images per forward pass (memory; 256 was fastest on 2 CPU cores)", "images", gt=0
    )


class MaskConfig(Section):
    """Selective mask M(s) = 1 on non-salient pixels (:func:`digr.method.masks.selective_mask`)."""

    kappa: float = _field(
        0.1, "threshold on the per-frame max-normalised teacher map: salient where S/max S >= kappa", ge=0, le=1
    )
    top_p: float | None = _field(
        None, "keep the top-p % pixels salient instead of kappa; null = use kappa", "percent", gt=0, lt=100
    )
    dilate: int = _field(0, "grow the salient set by this many pixels", "pixels", ge=0)


class StudentSpec(Section):
    """One student to distil: its name, λ and mask kind."""

    name: str = _field("digr", "names the student's files (letters, digits, '_' or '-')", pattern=r"^[A-Za-z0-9_-]+$")
    lam: float = _field(0.01, "λ, weight of the masked input-gradient penalty", "(score per [0,1] pixel)^-2", ge=0)
    mask: Literal["selective", "all", "none"] = _field(
        "selective", "selective (DIGR), all (M = 1, non-selective IGR) or none (plain distillation; needs lam 0)"
    )
    attention: Literal["none", "region", "fls_sparse", "fls_dense"] = _field(
        "none",
        "a saliency map built into the student: region (region-sensitive module, Yang et al. 2018 / rl-attention), "
        "fls_sparse or fls_dense (Free-Lunch Saliency, Nikulin et al. 2019); none = the teacher's plain architecture",
    )
    attention_entropy: float = _field(
        0.0,
        "c of the attention-entropy penalty c·H(A) added to the loss (region only; rl-attention: 0.001-0.005)",
        "1/nat",
        ge=0,
    )

    @model_validator(mode="after")
    def _entropy_needs_region(self) -> StudentSpec:
        if self.attention_entropy and self.attention != "region":
            raise ConfigError(
                f"distill.students ({self.name}): attention_entropy needs attention: region (its maps are distributions "
                f"over positions); got attention: {self.attention}. Set attention_entropy: 0 or attention: region"
            )
        return self


def _default_students() -> list[StudentSpec]:
    return [
        StudentSpec(name="plain", lam=0.0, mask="none"),
        StudentSpec(name="igr_all", lam=0.01, mask="all"),
        StudentSpec(name="digr", lam=0.01, mask="selective"),
    ]


class DistillConfig(Section):
    """Student training: KL(π_T(·|s;τ) ‖ π_S(·|s)) + λ·‖M ⊙ ∇_s g‖² (:mod:`digr.method.loss`), with optional DAgger
    rounds (:mod:`digr.method.dagger`)."""

    steps: int = _field(4_000, "Adam steps (per DAgger round)", "minibatch steps", gt=0)
    batch_size: int = _field(64, "minibatch size", "states", gt=0)
    learning_rate: float = _field(3e-4, "Adam learning rate", gt=0)
    tau: float = _field(1.0, "teacher temperature τ of the KL target", gt=0)
    target: Literal["log_prob", "sum_log_prob", "logit"] = _field(
        "log_prob",
        "score g whose input gradient is penalised: log_prob = log π_S(a*|s), a* = argmax π_T; "
        "sum_log_prob = Σ_a log π_S(a|s) (Ross et al. 2017); logit = the student's logit of a*",
    )
    checkpoint_every: int = _field(500, "resumable checkpoint interval", "minibatch steps", gt=0)
    dagger_rounds: int = _field(0, "DAgger rounds after the first `steps` (0 = distil from teacher states only)", ge=0)
    dagger_frames: int = _field(1_000, "student-visited states added per DAgger round", "states", gt=0)
    penalty_batch_size: PositiveInt | None = _field(
        None,
        "estimate the penalty on this many uniformly drawn rows per minibatch "
        "(unbiased; k/B of the double-backprop cost); null = all",
        "states",
    )
    students: list[StudentSpec] = _field(help="the students to distil (at least one)", factory=_default_students, min_length=1)


class EvalConfig(Section):
    """Evaluation: returns, agreement on held-out frames, latency, figures."""

    episodes: int = _field(100, "episodes per agent (seeds seed, seed+1, ...)", "episodes", gt=0)
    seed: int = _field(100_000, "seed of the first evaluation episode")
    top_percent: float = _field(10.0, "k of the top-k % IoU", "percent", gt=0, le=100)
    latency_repeats: int = _field(20, "timed calls per latency measurement (median)", gt=0)
    latency_batch: int = _field(32, "batch size of the second latency measurement (the first is 1)", "frames", gt=0)
    figure_frames: int = _field(6, "frames in the saliency figure", "frames", ge=0)
    deterministic: StrictBool = _field(True, "greedy actions (argmax); false = sample from the policy")
    independent_frames: int = _field(
        256,
        "held-out frames for the evidence that did not build the mask: agreement with the teacher's occlusion map and "
        "each map's deletion/insertion faithfulness to its own policy (digr.evaluation.independent); 0 = skip",
        "frames",
        ge=0,
    )
    occlusion_window: int = _field(8, "patch side of the teacher's occlusion reference map", "pixels", gt=0)
    occlusion_stride: int = _field(4, "patch stride of the teacher's occlusion reference map", "pixels", gt=0)
    deletion_steps: int = _field(16, "intervals of the deletion/insertion curves", gt=0)
    env_kwargs: dict = _field(
        help="the evaluation protocol: overrides of the eval env's kwargs for closed-loop returns and attacks only (states, "
        "teacher maps and DAgger keep the env as configured), e.g. sticky actions {repeat_action_probability: 0.25}",
        factory=dict,
    )
    compare_env_kwargs: dict | None = _field(
        None,
        "a second protocol whose returns are reported beside the first (metrics 'rollout_compare'), as overrides of the "
        "eval env's kwargs, e.g. {repeat_action_probability: 0.0} for the deterministic no-op protocol; null = none",
    )
    compare_label: str = _field("second protocol", "name of the second protocol in reports and summaries")


class SaliencyBenchConfig(Section):
    """``digr saliency-bench``: every method on the teacher and each student, quality against cost."""

    frames: int = _field(128, "held-out frames", "frames", gt=0)
    methods: list[Annotated[str, AfterValidator(_check_saliency_method)]] = _field(
        help="methods from the saliency registry (digr.saliency.METHODS)", factory=_default_bench_methods
    )
    n_samples: int = _field(50, "N of the sampling methods (SmoothGrad, SmoothGrad², VarGrad, AdaptGrad, mollifiers)", gt=0)
    noise_level: float = _field(0.15, "σ of the sampling methods relative to the [0, 1] pixel range", gt=0)
    confidence: float = _field(0.95, "AdaptGrad's confidence c", gt=0, lt=1)
    ig_steps: int = _field(50, "integrated-gradients steps", gt=0)
    ig_baseline: Literal["black", "blur", "uniform"] = _field("black", "integrated-gradients baseline")
    occlusion_window: int = _field(8, "occlusion patch side", "pixels", gt=0)
    occlusion_stride: int = _field(4, "occlusion stride", "pixels", gt=0)
    latency_repeats: int = _field(5, "timed calls per latency measurement (median)", gt=0)
    latency_batch: int = _field(32, "batch size of the second latency measurement (the first is 1)", "frames", gt=0)
    deletion_steps: int = _field(16, "points of the deletion/insertion curves", gt=0)
    sanity_frames: int = _field(32, "frames of the weight-randomisation sanity check", "frames", gt=0)
    in_run: StrictBool = _field(True, "also run the bench as the last stage of `digr run`")


class AttackConfig(Section):
    """``digr attack``: ℓ∞ observation attacks (:mod:`digr.attacks`) on the teacher and the students; the flags
    ``--attacks``, ``--eps``, ``--episodes`` and ``--agents`` override these."""

    attacks: list[Annotated[str, AfterValidator(_check_attack)]] = _field(
        help="attack names: random, fgsm, pgd10, pgd50, mad, critic, pgd<K>, mad<K>, critic<K>",
        factory=lambda: ["random", "fgsm", "pgd10", "pgd50", "mad"],
    )
    eps: list[Annotated[float | str, AfterValidator(_check_eps)]] = _field(
        help="budgets ε as numbers or fractions such as '1/255' (0 gives clean returns under the same protocol)",
        unit="[0,1] pixel units",
        factory=lambda: ["1/255", "3/255", "5/255"],
    )
    episodes: PositiveInt | None = _field(
        None, "closed-loop episodes per (agent, attack, ε), seeds evaluate.seed + i; null = evaluate.episodes", "episodes"
    )
    open_loop_frames: int = _field(512, "held-out states attacked open loop (flip rate, KL)", "states", gt=0)
    batch_size: int = _field(256, "frames per open-loop attack call", "frames", gt=0)
    n_parallel: int = _field(50, "closed-loop episodes stepped in lockstep (attacked as one batch)", "episodes", gt=0)
    agents: list[str] | None = _field(None, "which of teacher and the students to attack; null = all")
    options: dict = _field(
        help="attack name -> keyword arguments for make_attack, e.g. {pgd50: {step_size: 0.00392}} ([0,1] units)", factory=dict
    )


class ExperimentConfig(Section):
    """A whole experiment; artefacts go to ``{run_dir}/{name}/`` (:class:`digr.running.run_folder.RunFolder`)."""

    name: str = _field("minigrid_fetch", "names the run folder (letters, digits, '_' or '-')", pattern=r"^[A-Za-z0-9_-]+$")
    seed: int = _field(0, "seeds the teacher, dataset episodes and students")
    run_dir: str = _field("runs", "folder holding run folders")
    device: str = _field("cpu", "torch device: cpu or cuda[:N]", pattern=r"^(cpu|cuda(:\d+)?)$")
    track: StrictBool = _field(False, "log to Weights & Biases (WANDB_MODE=offline works without network)")
    wandb_project: str = _field("digr", "Weights & Biases project")
    env: EnvConfig = _field(help="environment", factory=EnvConfig)
    teacher: TeacherConfig = _field(help="teacher", factory=TeacherConfig)
    dataset: DatasetConfig = _field(help="teacher states", factory=DatasetConfig)
    perturbation: PerturbationConfig = _field(help="teacher perturbation saliency", factory=PerturbationConfig)
    mask: MaskConfig = _field(help="selective penalty mask", factory=MaskConfig)
    distill: DistillConfig = _field(help="students", factory=DistillConfig)
    evaluate: EvalConfig = _field(help="evaluation", factory=EvalConfig)
    saliency_bench: SaliencyBenchConfig = _field(help="saliency methods benchmark", factory=SaliencyBenchConfig)
    attack: AttackConfig = _field(help="observation attacks", factory=AttackConfig)

    @property
    def run_path(self) -> Path:
        """``Path(run_dir) / name``."""
        return Path(self.run_dir) / self.name

    def protocol_env_fns(self) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
        """Env factories of the evaluation protocol (closed-loop returns, attacks) and of the second protocol reported
        beside it (None when ``evaluate.compare_env_kwargs`` is null)."""
        e, make = self.evaluate, self.env.make_fn
        return make(True, e.env_kwargs), None if e.compare_env_kwargs is None else make(True, e.compare_env_kwargs)

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        """Rules that involve more than one field; each message names the fields."""
        names = [s.name for s in self.distill.students]
        if len(set(names)) != len(names):
            raise ConfigError(f"distill.students: names must be unique, got {names}")
        for i, s in enumerate(self.distill.students):
            if s.mask == "none" and s.lam != 0:
                raise ConfigError(
                    f"distill.students[{i}]: mask 'none' needs lam 0 (got {s.lam}); use mask 'all' or 'selective'"
                )
        validate_attack_options(self.attack.options)
        validate_attack_agents(self.attack.agents, names)
        t = self.teacher
        if t.sb3_zip and t.arch != "nature":
            raise ConfigError(
                "teacher.arch: an SB3 CnnPolicy zip (teacher.sb3_zip) is a Nature-DQN CNN; set teacher.arch: nature "
                "(the students are built with the teacher's architecture)"
            )
        if t.sb3_zip and t.pretrained:
            raise ConfigError("teacher.sb3_zip and teacher.pretrained: give at most one source for a ready teacher")
        if t.kind == "imitation" and not (t.expert or t.sb3_zip or t.pretrained):
            raise ConfigError(
                "teacher.expert: teacher.kind imitation needs an expert to imitate, e.g. "
                "expert: 'envs.carracing:PurePursuitExpert' (or a ready teacher in teacher.pretrained)"
            )
        if t.batch_size > t.n_envs * t.n_steps:
            raise ConfigError("teacher.batch_size: must be <= teacher.n_envs * teacher.n_steps (one rollout)")
        return self


# ------------------------------------------------------------------------------------------------- checks with lists


def validate_attack_spec(attacks: list[str], eps: list, names: tuple[str, str] = ("attack.attacks", "attack.eps")) -> None:
    """Check attack names (:func:`digr.attacks.make_attack`) and budgets (:func:`digr.attacks.parse_eps`).

    :param names: how the two lists are called in messages (config fields, or command-line flags).
    :raises ConfigError: the first bad entry, named as ``{names[1]}[i]`` / ``{names[0]}[i]``.
    """
    for i, e in enumerate(eps):
        try:
            _check_eps(e)
        except ValueError as err:
            raise ConfigError(f"{names[1]}[{i}]: {err}") from err
    for i, name in enumerate(attacks):
        try:
            _check_attack(name)
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
            raise ConfigError(
                f"{field_name}.{name}: expected a mapping of keyword arguments such as {{step_size: 0.004}}, got {kwargs!r}"
            )
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


# ------------------------------------------------------------------------------------------------------ load and dump


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model at a ``loc`` path of :class:`ExperimentConfig` (None where it is not a section)."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _path(loc: tuple) -> str:
    """``("distill", "students", 1, "mask")`` → ``"distill.students[1].mask"`` (pydantic's union and validator tags
    such as ``float`` or ``function-after[...]`` are left out)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "str", "int", "bool", "list", "dict") or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _config_error(err: ValidationError) -> ConfigError:
    """The first error of a pydantic ``ValidationError`` as a :class:`ConfigError` naming the field and the fix."""
    e = err.errors(include_url=False)[0]
    loc, msg = tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"unknown config field {_path(loc)!r}.{hint} Allowed fields here: {names}")
    if not loc:  # a cross-field rule: its message names the fields
        return ConfigError(msg)
    got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
    model, name = _model_at(loc[:-1]), loc[-1]
    help_ = model.model_fields[name].description if model is not None and name in model.model_fields else None
    return ConfigError(f"{_path(loc)}: {msg}{got}" + (f". This field: {help_}" if help_ else ""))


def config_from_dict(data: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a plain mapping (YAML content).

    :raises ConfigError: unknown field, wrong type or invalid value; the message names the field and what is allowed.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of fields, got {type(data).__name__} {data!r}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise _config_error(err) from None


def _set_override(data: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {dotted}={raw!r}: the value is not valid YAML ({str(e).splitlines()[0]}); "
            "quote it, e.g. -o 'teacher.channels=[32, 64]'"
        ) from None


def read_config_file(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of a YAML config file, with ``extends: OTHER.yaml`` resolved: OTHER (a path relative to this
    file's folder, itself allowed to extend another) is read first and this file's fields are merged over it, mappings
    key by key, any other value (a list included, e.g. ``distill.students``) replaced whole. This is how a variant of an
    experiment names only what it changes (``experiments/carracing_attention.yaml``).

    :raises ConfigError: not valid YAML, not a mapping, ``extends`` not a string, its file missing, or a loop of
        ``extends``; the message names the file and the fix.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends must be the path of another config file, e.g. extends: carracing.yaml")
    chain = (*_chain, path.resolve())
    base_path = path.parent / base
    if base_path.resolve() in chain:
        loop = " -> ".join(p.name for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: extends loops back ({loop}); remove one of these extends")
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {base!r}, but {base_path} does not exist; give a path relative to {path.parent}")
    return _merged(read_config_file(base_path, chain), data)


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment config (``extends`` resolved, see :func:`read_config_file`), apply ``key.sub=value``
    overrides (values parsed as YAML), and validate it.

    :raises FileNotFoundError: the file does not exist.
    :raises ConfigError: malformed YAML, a bad ``extends``, a malformed override, or an invalid field (see
        :func:`config_from_dict`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found; see experiments/ for examples")
    data = read_config_file(path)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value, e.g. teacher.total_timesteps=100000")
        key, raw = item.split("=", 1)
        _set_override(data, key.strip(), raw)
    return config_from_dict(data)


def config_to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-safe) view of a config or section, fields in declaration order."""
    return obj.model_dump() if isinstance(obj, BaseModel) else obj


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip().removesuffix("...").strip()


def describe_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (loadable again), each field followed by a comment with its help, its unit and its
    default (``(the default)`` where the value is the default).

    :returns: the text ``digr config CONFIG`` prints.
    """
    lines: list[str] = []

    def comment(f, value, leaf: bool = True) -> str:
        parts = [f.description or ""]
        unit = (f.json_schema_extra or {}).get("unit") if isinstance(f.json_schema_extra, dict) else None
        if unit:
            parts.append(f"unit: {unit}")
        default = f.get_default(call_default_factory=True)
        if leaf:
            parts.append("(the default)" if default == value else f"default: {_yaml_value(default)}")
        return "  # " + "; ".join(p for p in parts if p)

    def walk(model: BaseModel, indent: str) -> None:
        for name, f in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                doc = re.sub(r":\w+:|``|`", "", (type(value).__doc__ or "").split("\n\n")[0])
                doc = re.sub(r"\s+", " ", doc) if not indent else f.description  # a nested section: its field's help
                lines.append(f"{indent}{name}:  # {doc}")
                walk(value, indent + "  ")
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                lines.append(f"{indent}{name}:{comment(f, value, leaf=False)}")
                item = type(value[0])
                lines.append(f"{indent}  # each: " + "; ".join(f"{k}: {g.description}" for k, g in item.model_fields.items()))
                lines.extend(f"{indent}  - {_yaml_value(config_to_dict(v))}" for v in value)
            else:
                lines.append(f"{indent}{name}: {_yaml_value(value)}{comment(f, value)}")

    walk(cfg, "")
    return "\n".join(lines) + "\n"
