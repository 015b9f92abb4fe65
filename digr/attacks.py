"""ℓ∞ adversarial attacks on a policy's image observation.

Every attack maps ``(policy, image, side=None) -> image_adv`` with

* ``image``: float ``[B, C, H, W]`` in [0, 1] (raw uint8 / 255, see :func:`digr.contracts.obs_to_tensors`);
* ``side``: float ``[B, K]`` or ``None``: handed to the policy unchanged and never perturbed;
* ``image_adv``: float ``[B, C, H, W]``, same dtype and device as ``image``, in [0, 1] and inside the ℓ∞ ball of radius
  ε around ``image`` (see *Quantisation* for the exact bound).

**Budget ε** is in [0, 1]-normalised pixel units (ε = 1/255 is one uint8 grey level). :func:`parse_eps` reads
``"1/255"``, ``"0.004"``, ``"3/255"``; :func:`eps_to_255` and :func:`eps_to_uint8` give the same budget in /255 units
and in whole uint8 levels, :func:`format_eps` a label for tables.

**Policies** follow :class:`digr.contracts.Policy`: a *categorical* policy returns logits ``[B, A]`` and acts greedily
by argmax; a *Gaussian* policy (``action_distribution = "gaussian"``) returns the action mean μ(s) ``[B, A]`` and has a
state-independent ``log_std`` ``[A]``. A critic (:class:`digr.contracts.Critic`, e.g.
:class:`digr.policies.SB3Teacher`) is needed only by the critic attack.

**Attacks** (:func:`make_attack` builds them by name, see :data:`ATTACK_NAMES`):

==========  ===================================================================================================
``random``  uniform noise s' = s + U(−ε, ε) per pixel (the non-adversarial baseline).
``fgsm``    one signed-gradient step s' = s + ε·sign(∇ₛ L) (Goodfellow et al. 2015, arXiv 1412.6572, the fast gradient
            sign method), applied to policies by Huang et al. 2017 (arXiv 1702.02284).
``pgdK``    K projected signed-gradient steps from a random start in the ball (Madry et al. 2018, arXiv 1706.06083,
            the PGD update), in the robust-RL form of SA-DQN (Zhang et al. 2020, arXiv 2003.08938): untargeted
            against the clean greedy action. ``pgd10`` and ``pgd50`` are named; ``pgd`` takes ``steps``.
``mad``     maximal action difference (Zhang et al. 2020, SA-PPO, arXiv 2003.08938, "MAD attack"):
            maximise D(π(·|s) ‖ π(·|s')) by PGD with a random start.
``critic``  minimise the critic's value V(s') by PGD with a random start (the critic attack of Pattanaik et al.
            2018, arXiv 1712.03632, and SA-PPO's critic-based baseline, arXiv 2003.08938).
==========  ===================================================================================================

**Losses** (all maximised; ``a`` and μ(s) are computed once on the clean observation, without gradients):

* categorical FGSM/PGD: cross-entropy CE(logits(s'), a) with a = argmax logits(s) (Huang et al. 2017);
* Gaussian FGSM/PGD: squared mean deviation ‖μ(s') − μ(s)‖²₂ (a deterministic regression "label" μ(s));
* categorical MAD: KL(π(·|s) ‖ π(·|s')) = Σ_a p_a(s) (log p_a(s) − log p_a(s'));
* Gaussian MAD: Σ_j ((μ_j(s') − μ_j(s)) / σ̃_j)² with σ̃ = σ / mean(σ) (SA-PPO's MAD objective for a Gaussian policy
  with state-independent σ; it equals 2·mean(σ)²·KL);
* critic: −V(s').

Losses are summed over the batch, so every frame is attacked independently (the sign of each frame's gradient does
not depend on the batch size). The KL, the squared deviation and the Gaussian MAD objective all have zero gradient at
s' = s (their minimum): PGD and MAD therefore start from a random point, and Gaussian FGSM takes its gradient at a
seeded random point s + U(−ε, ε) (then steps from s) — a zero-gradient FGSM would silently do nothing.

**Projection.** Each PGD step is ``x ← x + α·sign(∇)``, ``δ ← clip(x − s, −ε, ε)``, ``x ← clip(s + δ, 0, 1)`` (same
order of operations as torchattacks 3.5.1, so unquantised results match it to float32 rounding). Step size α defaults to
2.5·ε/K for PGD and MAD (the default of MadryLab's ``robustness`` library, which lets K steps travel 2.5× the
radius), and ε/K for the critic attack.

**Quantisation** (``quantize=True``, the default): an environment can only emit uint8 images, so after the attack
every pixel is rounded to the nearest level k/255 and then clipped, on the grid, into the ball: to the levels
``[ceil(255·(s − ε)), floor(255·(s + ε))] ∩ [0, 255]`` (round, then floor/ceil towards the clean value). Plain rounding
could move a pixel up to ε + 0.5/255 from s; with this rule ‖s' − s‖∞ ≤ ε whenever s is on the uint8 grid (up to
float32 rounding, < 1e-6), and the effective budget is floor(255·ε)/255 — ε < 1/255 cannot change an on-grid image.
For clean pixels off the grid (synthetic inputs) the bound is ε + 0.001/255 (a tolerance against float error in the
grid bounds); where no grid level lies in the ball (off-grid s and ε < 0.5/255) the pixel keeps its clean value.
``quantize=False`` returns the float attack (the form torchattacks computes).

**Invariants** (tested in ``tests/test_attacks.py``): ε = 0 returns the input unchanged exactly (every attack); the
side input is never modified; the policy's parameters get no ``.grad`` and every module's train/eval mode is restored
(attacks run the policy in eval mode); results are reproducible given the seed or ``torch.Generator`` (noise is drawn
on the CPU and moved to the image's device, so the same seed gives the same noise on every device).
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import torch as th
import torch.nn.functional as F
from torch import nn

from digr.contracts import Policy, categorical_kl, is_gaussian, policy_std

__all__ = [
    "ATTACK_NAMES",
    "FGSM",
    "MAD",
    "PGD",
    "Attack",
    "CriticAttack",
    "RandomNoise",
    "action_divergence",
    "eps_to_255",
    "eps_to_uint8",
    "format_eps",
    "make_attack",
    "parse_eps",
    "quantize_to_ball",
]

#: Names accepted by :func:`make_attack` (``pgd<K>``, ``mad<K>``, ``critic<K>`` also work, e.g. ``pgd20``).
ATTACK_NAMES = ("random", "fgsm", "pgd10", "pgd50", "pgd", "mad", "critic")

_GRID_TOL = 1e-3  # in uint8 levels: float error allowed when computing the grid ball's bounds


# ----------------------------------------------------------------------------------------------------- budget units


def parse_eps(value: str | float | int) -> float:
    """Read an ℓ∞ budget in [0, 1] pixel units from ``"1/255"``, ``"3/255"``, ``"0.004"``, ``"0"`` or a number.

    :returns: ε as a Python float in [0, 1].
    :raises ValueError: not a number or fraction, a zero denominator, a negative value, or a value above 1 (a budget
        of ``4`` is almost certainly meant as ``"4/255"``; the message says so).
    """
    if isinstance(value, bool):
        raise ValueError(f"eps={value!r} is a bool; give a number in [0, 1] or a fraction such as '1/255'")
    if isinstance(value, (int, float)):
        eps = float(value)
        text = repr(value)
    else:
        text = str(value).strip()
        m = re.fullmatch(r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)", text)
        try:
            num, den = (float(m.group(1)), float(m.group(2))) if m else (float(text), 1.0)
        except ValueError:
            raise ValueError(
                f"eps={value!r} is not a number or fraction; write e.g. '1/255', '3/255' or '0.004' ([0, 1] pixel units)"
            ) from None
        if den == 0:
            raise ValueError(f"eps={value!r} divides by zero; write e.g. '1/255'")
        eps = num / den
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps={text} must be a finite number ≥ 0 ([0, 1] pixel units, e.g. '1/255')")
    if eps > 1:
        hint = (
            f"for {text} grey levels write '{text}/255'"
            if "/" not in text and eps <= 255
            else "no ℓ∞ budget exceeds the whole pixel range: use at most '255/255' (= 1)"
        )
        value = f"eps={text} = {eps:.4g}" if "/" in text else f"eps={text}"
        raise ValueError(f"{value} is larger than 1, but budgets are in [0, 1] pixel units (uint8/255); {hint}")
    return eps


def eps_to_255(eps: float) -> float:
    """ε in /255 units (ε = 1/255 → 1.0), a float ≥ 0; these are the units of most Atari/robust-RL papers."""
    return float(eps) * 255.0


def eps_to_uint8(eps: float) -> int:
    """Largest whole number of uint8 grey levels a quantised attack can move an on-grid pixel: floor(255·ε) (int ≥ 0)."""
    return math.floor(float(eps) * 255.0 + _GRID_TOL)


def format_eps(eps: float) -> str:
    """Label for tables and plots: ``"0"``, ``"1/255"``, ``"2.5/255"`` (k/255 with k to 2 decimals)."""
    if eps == 0:
        return "0"
    k = Fraction(eps_to_255(eps)).limit_denominator(100)
    if abs(float(k) - eps_to_255(eps)) < 1e-6:
        return f"{float(k):g}/255"
    return f"{eps_to_255(eps):.2f}/255"


# ----------------------------------------------------------------------------------------------------- measurement


def action_divergence(policy: Policy, clean: th.Tensor, adv: th.Tensor) -> th.Tensor:
    """KL(π(·|s) ‖ π(·|s')) per frame, float ``[B]`` ≥ 0 (nats).

    :param clean: policy output on s (logits or μ), ``[B, A]``. :param adv: output on s', ``[B, A]``.
    Categorical: Σ_a p_a(s)(log p_a(s) − log p_a(s')). Gaussian with state-independent σ: ½ Σ_j ((μ_j(s') − μ_j(s))/σ_j)²
    (the closed-form KL of two Gaussians with equal covariance).
    """
    if is_gaussian(policy):
        sigma = policy_std(policy).to(clean)
        return 0.5 * (((adv - clean) / sigma) ** 2).sum(dim=1)
    return categorical_kl(clean, adv).clamp_min(0.0)  # ≥ 0; rounding can give −1e-9 for identical outputs


@contextmanager
def _eval_mode(policy: Policy) -> Iterator[None]:
    """Run the policy in eval mode and restore every submodule's own mode afterwards; enable autograd."""
    modes = [(m, m.training) for m in policy.modules()] if isinstance(policy, nn.Module) else []
    if isinstance(policy, nn.Module):
        policy.eval()
    try:
        with th.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def quantize_to_ball(adv: th.Tensor, clean: th.Tensor, eps: float) -> th.Tensor:
    """Round ``adv`` to the uint8 grid k/255 and clip it, on the grid, into the ε-ball around ``clean`` and [0, 1].

    :param adv: float ``[...]`` in [0, 1]; :param clean: float, same shape, in [0, 1]; :param eps: ε ≥ 0 ([0, 1] units).
    :returns: float tensor like ``adv``: ``clip(round(255·adv), ceil(255·(clean − ε)), floor(255·(clean + ε))) / 255``
        (bounds clipped to [0, 255]); pixels whose grid ball is empty keep their ``clean`` value. See the module
        docstring, *Quantisation*, for the resulting bound.
    """
    level = th.round(adv * 255.0)
    lo = th.ceil((clean - eps) * 255.0 - _GRID_TOL).clamp(min=0.0)
    hi = th.floor((clean + eps) * 255.0 + _GRID_TOL).clamp(max=255.0)
    q = th.minimum(th.maximum(level, lo), hi) / 255.0
    return th.where(lo > hi, clean, q).to(adv.dtype)


def _uniform(shape: th.Size, eps: float, generator: th.Generator, like: th.Tensor) -> th.Tensor:
    """U(−ε, ε) noise of ``shape`` drawn on the CPU from ``generator`` and moved to ``like``'s device and dtype."""
    u = th.rand(shape, generator=generator, dtype=th.float32)
    return ((2.0 * u - 1.0) * eps).to(device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------------------------------------- attacks


class Attack(abc.ABC):
    """Base class of the ℓ∞ attacks: ``attack(policy, image, side=None, generator=None) -> image_adv``.

    :param eps: budget ε in [0, 1] pixel units (a float or a string for :func:`parse_eps`).
    :param quantize: round the result to the uint8 grid inside the ball (module docstring, *Quantisation*).
    :param seed: seeds the attack's own ``torch.Generator`` (used when a call passes none); :meth:`reset` reseeds it.
    :raises ValueError: bad ε (see :func:`parse_eps`).

    Subclasses implement :meth:`perturb`; the base class validates inputs, short-cuts ε = 0 to the identity, runs the
    policy in eval mode (restoring modes afterwards), clips to [0, 1] and the ball, and quantises.
    """

    name = "attack"

    def __init__(self, eps: float | str, *, quantize: bool = True, seed: int = 0):
        self.eps = parse_eps(eps)
        self.quantize = bool(quantize)
        self.seed = int(seed)
        self.generator = th.Generator().manual_seed(self.seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the attack's generator with ``seed`` (default: the constructor's seed)."""
        self.seed = self.seed if seed is None else int(seed)
        self.generator.manual_seed(self.seed)

    def describe(self) -> dict:
        """JSON-safe description: ``{"name", "eps", "eps_255", "quantize", "seed", ...attack parameters}``."""
        return {
            "name": self.name,
            "eps": self.eps,
            "eps_255": eps_to_255(self.eps),
            "quantize": self.quantize,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k not in ("name", "eps_255"))
        return f"{type(self).__name__}({args})"

    def __call__(
        self, policy: Policy, image: th.Tensor, side: th.Tensor | None = None, generator: th.Generator | None = None
    ) -> th.Tensor:
        """Attack ``image`` (float ``[B, C, H, W]`` in [0, 1]); ``side`` (``[B, K]`` or None) is passed through untouched.

        :param generator: CPU ``torch.Generator`` for the random parts; default the attack's own (seeded) generator.
        :returns: float ``[B, C, H, W]`` in [0, 1], within the ε-ball (module docstring); ``image`` itself is not modified.
        :raises TypeError: ``image`` is not a floating tensor.
        :raises ValueError: ``image`` is not 4-D or has values outside [0, 1] (convert uint8 with
            :func:`digr.contracts.obs_to_tensors`, which divides by 255).
        """
        if not isinstance(image, th.Tensor) or not image.is_floating_point():
            raise TypeError(
                f"image must be a float tensor [B, C, H, W] in [0, 1], got {type(image).__name__} "
                f"{getattr(image, 'dtype', '')}; convert uint8 observations with digr.contracts.obs_to_tensors"
            )
        if image.ndim != 4:
            raise ValueError(
                f"image must be [B, C, H, W], got shape {tuple(image.shape)}; add a batch dimension with unsqueeze(0)"
            )
        if image.numel() and (float(image.min()) < 0.0 or float(image.max()) > 1.0):
            raise ValueError(
                f"image values must lie in [0, 1] (raw uint8 / 255), got [{float(image.min()):.3g}, "
                f"{float(image.max()):.3g}]; divide uint8 pixels by 255 (digr.contracts.obs_to_tensors)"
            )
        if self.eps == 0.0:
            return image.clone()
        gen = self.generator if generator is None else generator
        clean = image.detach()
        with _eval_mode(policy):
            adv = self.perturb(policy, clean, side, gen).detach()
        adv = th.clamp(adv, 0.0, 1.0)  # perturb() already projects onto the ball; clipping is idempotent on [0, 1]
        if self.quantize:
            adv = quantize_to_ball(adv, clean, self.eps)
        return adv

    @abc.abstractmethod
    def perturb(self, policy: Policy, image: th.Tensor, side: th.Tensor | None, generator: th.Generator) -> th.Tensor:
        """Subclass hook: the float adversarial image ``[B, C, H, W]`` inside the ε-ball around ``image`` (the base class
        then clips to [0, 1] and quantises); called with ε > 0, in eval mode, with autograd on."""


class RandomNoise(Attack):
    """Uniform random noise s' = clip(s + U(−ε, ε), 0, 1), i.i.d. per pixel and channel (non-adversarial baseline).

    Parameters as :class:`Attack`. The policy is not called.
    """

    name = "random"

    def perturb(self, policy, image, side, generator):
        return image + _uniform(image.shape, self.eps, generator, image)


def _loss_fn(policy: Policy, image: th.Tensor, side: th.Tensor | None, objective: str):
    """Return ``loss(x) -> scalar`` (summed over the batch) to *maximise*, with its clean reference computed once."""
    gaussian = is_gaussian(policy)
    if objective == "critic":
        value = getattr(policy, "value", None)
        if not callable(value):
            raise TypeError(
                f"the critic attack needs a value head, but {type(policy).__name__} has no "
                "`value(image, side) -> [B]` method; attack a teacher with a critic (digr.policies.SB3Teacher) "
                "or use 'pgd10'/'mad' for policies without one"
            )
        return lambda x: -value(x, side).sum()
    with th.no_grad():
        clean = policy(image, side).detach()
    if objective == "ce":
        if gaussian:
            return lambda x: ((policy(x, side) - clean) ** 2).sum()
        label = clean.argmax(dim=1)
        return lambda x: F.cross_entropy(policy(x, side), label, reduction="sum")
    if objective == "mad":
        if gaussian:
            sigma = policy_std(policy).to(clean)
            sigma_tilde = sigma / sigma.mean()
            return lambda x: (((policy(x, side) - clean) / sigma_tilde) ** 2).sum()
        return lambda x: categorical_kl(clean, policy(x, side)).sum()
    raise ValueError(f"unknown objective {objective!r}")


def _grad(loss, x: th.Tensor) -> th.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = th.autograd.grad(loss(x), x)
    return g


class FGSM(Attack):
    """Fast gradient sign method: s' = clip(s + ε·sign(∇ₛ L(s)), 0, 1).

    Goodfellow, Shlens, Szegedy 2015 (arXiv 1412.6572: η = ε·sign(∇ₓJ)); on policies: Huang et al. 2017, "Adversarial
    Attacks on Neural Network Policies" (arXiv 1702.02284), untargeted with L = CE(logits(s'), argmax logits(s)).
    Gaussian policies: L = ‖μ(s') − μ(s)‖², whose gradient is zero at s, so the gradient is taken at a seeded random
    point s + U(−ε, ε) and the step is applied from s. Parameters as :class:`Attack`.
    """

    name = "fgsm"

    def perturb(self, policy, image, side, generator):
        loss = _loss_fn(policy, image, side, "ce")
        at = image
        if is_gaussian(policy):
            at = th.clamp(image + _uniform(image.shape, self.eps, generator, image), 0.0, 1.0)
        return image + self.eps * _grad(loss, at).sign()  # |step| = ε exactly: inside the ball


class PGD(Attack):
    """Projected gradient descent with signed steps (ℓ∞), maximising an objective from a random start.

    Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks" (arXiv 1706.06083:
    x ← Π_ball(x + α·sign(∇ₓL))), in the form SA-DQN uses on policies (Zhang et al. 2020, arXiv 2003.08938):
    untargeted against the clean greedy action, L = CE(logits(s'), argmax logits(s)); Gaussian policies maximise
    ‖μ(s') − μ(s)‖².

    :param eps: budget ε ([0, 1] units). :param steps: K ≥ 1 iterations.
    :param step_size: α in [0, 1] units; default 2.5·ε/K.
    :param random_start: start from clip(s + U(−ε, ε), 0, 1) (default) instead of s.
    :param quantize, seed: as :class:`Attack`.
    :raises ValueError: steps < 1 or step_size ≤ 0.

    Per step: x ← x + α·sign(∇ₓL), δ ← clip(x − s, −ε, ε), x ← clip(s + δ, 0, 1) (torchattacks' order of operations).
    """

    name = "pgd"
    objective = "ce"
    default_step_factor = 2.5

    def __init__(
        self,
        eps: float | str,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        *,
        quantize: bool = True,
        seed: int = 0,
    ):
        super().__init__(eps, quantize=quantize, seed=seed)
        if int(steps) < 1:
            raise ValueError(f"steps={steps} must be ≥ 1")
        if step_size is not None and not step_size > 0:
            raise ValueError(
                f"step_size={step_size} must be > 0 ([0, 1] pixel units), or None for {self.default_step_factor}·eps/steps"
            )
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.random_start = bool(random_start)
        self.name = f"{type(self).name}{self.steps}"  # e.g. pgd10, mad10, critic10

    @property
    def alpha(self) -> float:
        """Step size α actually used, [0, 1] units."""
        return self.step_size if self.step_size is not None else self.default_step_factor * self.eps / self.steps

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "step_size": self.alpha, "random_start": self.random_start}

    def perturb(self, policy, image, side, generator):
        loss = _loss_fn(policy, image, side, self.objective)
        x = image.clone()
        if self.random_start:
            x = th.clamp(x + _uniform(image.shape, self.eps, generator, image), 0.0, 1.0)
        for _ in range(self.steps):
            x = x.detach() + self.alpha * _grad(loss, x).sign()
            delta = th.clamp(x - image, min=-self.eps, max=self.eps)
            x = th.clamp(image + delta, min=0.0, max=1.0)
        return x


class MAD(PGD):
    """Maximal action difference attack (Zhang et al. 2020, SA-PPO, arXiv 2003.08938, "MAD attack").

    PGD (K steps, random start, α = 2.5·ε/K by default) maximising KL(π(·|s) ‖ π(·|s')) for categorical policies and
    Σ_j ((μ_j(s') − μ_j(s)) / σ̃_j)², σ̃ = σ / mean(σ), for Gaussian ones. SA-PPO solves the same maximisation with SGLD;
    we use PGD with a random start (the objective's gradient vanishes at s, so ``random_start=False`` would make the first
    step follow only float round-off; keep the default). Parameters as :class:`PGD`.
    """

    name = "mad"
    objective = "mad"


class CriticAttack(PGD):
    """Critic attack: PGD (K steps, random start, α = ε/K by default) *minimising* the critic's value V(s').

    Pattanaik et al. 2018, "Robust Deep Reinforcement Learning with Adversarial Attacks" (arXiv 1712.03632), and the
    critic-based attack used as a baseline by SA-PPO (Zhang et al. 2020, arXiv 2003.08938). Parameters as
    :class:`PGD`.

    :raises TypeError: (on call) the policy has no ``value(image, side) -> [B]`` method (students have none; attack a
        teacher such as :class:`digr.policies.SB3Teacher`, or use ``pgd10``/``mad``).
    """

    name = "critic"
    objective = "critic"
    default_step_factor = 1.0


def make_attack(name: str, eps: float | str, **kwargs) -> Attack:
    """Build an attack by name: ``random``, ``fgsm``, ``pgd10``, ``pgd50``, ``pgd`` (``steps=K``), ``mad``, ``critic``;
    ``pgd<K>``, ``mad<K>`` and ``critic<K>`` set K in the name (e.g. ``pgd20``, ``mad50``).

    :param eps: budget ε in [0, 1] pixel units (float or string such as ``"1/255"``).
    :param kwargs: ``quantize``, ``seed`` for all; ``steps``, ``step_size``, ``random_start`` for pgd/mad/critic.
    :returns: an :class:`Attack`.
    :raises ValueError: unknown name (with close matches), an argument the attack does not take (with the allowed
        ones), steps given twice, or a bad ε/steps/step size.
    """
    key = str(name).strip().lower()
    m = re.fullmatch(r"(pgd|mad|critic)(\d+)", key)
    classes = {"random": RandomNoise, "fgsm": FGSM, "pgd": PGD, "mad": MAD, "critic": CriticAttack}
    if m:
        if "steps" in kwargs:
            raise ValueError(f"attack {name!r} fixes steps={m.group(2)} in its name; drop steps= or use {m.group(1)!r}")
        cls, kwargs = classes[m.group(1)], {**kwargs, "steps": int(m.group(2))}
    elif key in classes:
        cls = classes[key]
    else:
        close = difflib.get_close_matches(key, list(ATTACK_NAMES), n=3, cutoff=0.4)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown attack {name!r}; choose one of {list(ATTACK_NAMES)} (or pgd<K>, mad<K>, critic<K>).{hint}")
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "eps")]
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        raise ValueError(f"attack {name!r} does not take {extra}; its options are {allowed}")
    return cls(eps, **kwargs)
