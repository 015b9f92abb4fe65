"""Robustness of policies under ℓ∞ observation attacks (:mod:`digr.attacks`): closed-loop returns and open-loop action
flips and divergence, as JSON-safe rows (:mod:`digr.report.attack` renders them).

* **Closed loop** (:func:`attacked_rollout_returns`): the attacker perturbs every image observation the agent sees for
  whole episodes (the evaluation protocol of SA-DQN/SA-PPO, Zhang et al. 2020, arXiv 2003.08938); the agent acts
  greedily on the attacked observation. Episodes run through the rollout engine (:func:`digr.rollout.run_episodes`)
  with the attack as its observation transform: episode ``i`` uses env seed ``seed + i`` and the attack's random parts
  a ``torch.Generator`` seeded per wave of ``n_parallel`` episodes, so every agent faces the same layouts and a run
  reproduces exactly.
* **Open loop** (:func:`open_loop_attack`): on a fixed set of states, the fraction of frames whose greedy action
  changes (action-flip rate; Huang et al. 2017, arXiv 1702.02284) and the mean KL(π(·|s) ‖ π(·|s')) (for Gaussian
  policies the closed-form KL ½ Σ_j (Δμ_j/σ_j)², plus the ℓ2 shift of the mean action).
* :func:`robustness_sweep` runs both over agents × attacks × ε and returns a list of plain JSON-safe row dicts
  (undefined values are ``None``, never NaN); :func:`digr.evaluation.attack_cells.merge_cells` merges them with the
  cells of earlier calls.

95 % CIs are normal-approximation half-widths (:func:`digr.evaluation.metrics.nanmean_ci`); ``None`` where undefined (n < 2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch as th

from digr.attacks import Attack, action_divergence, eps_to_255, format_eps, make_attack, parse_eps
from digr.contracts import Policy, is_gaussian, policy_device
from digr.evaluation.metrics import nanmean_ci
from digr.evaluation.returns import summarize
from digr.rollout import Episode, Fingerprints, GreedyActor, Hook, Step, run_episodes

__all__ = ["ActionFlips", "attacked_rollout_returns", "open_loop_attack", "robustness_sweep"]


def _f(x) -> float | None:
    """Python float, or None for NaN/inf/None (JSON-safe)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(values) -> tuple[float | None, float | None]:
    mean, hw, _ = nanmean_ci(values)
    return _f(mean), _f(hw)


class ActionFlips(Hook):
    """Recording hook: per episode, the fraction of steps whose greedy action on the attacked observation s' differs
    from the one on the clean s (categorical), or the mean ℓ2 shift ‖μ(s') − μ(s)‖ of the mean action (Gaussian).
    Needs one extra forward pass of the policy on the clean observations per step."""

    def __init__(self, policy: Policy):
        self.policy, self.gaussian = policy, is_gaussian(policy)
        self._moved: dict[int, float] = {}
        self.rates: dict[int, float] = {}

    def on_step(self, step: Step) -> None:
        with th.no_grad():
            clean = self.policy(step.image, step.side)
        out = step.act.output
        moved = (out - clean).norm(dim=1).tolist() if self.gaussian else (out.argmax(1) != clean.argmax(1)).tolist()
        for i, m in zip(step.episodes, moved):
            self._moved[i] = self._moved.get(i, 0.0) + (float(m) if self.gaussian else int(m))

    def on_episode_end(self, episode: Episode) -> None:
        self.rates[episode.index] = self._moved.pop(episode.index, 0) / episode.length


def attacked_rollout_returns(
    env_fn: Callable[[], gym.Env],
    policy: Policy,
    attack: Attack | None,
    episodes: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
    n_parallel: int = 32,
) -> dict:
    """Run ``episodes`` full episodes with ``attack`` perturbing every image observation; greedy actions on s'.

    Episodes run in lockstep waves of up to ``n_parallel`` environments (:func:`digr.rollout.run_episodes`): at each
    step the observations of all running episodes of a wave are attacked as one batch (an attack such as PGD-50 costs
    50 forward and backward passes per step, so batching across episodes is what makes ≥ 100 attacked episodes
    affordable on a CPU).

    :param env_fn: builds a DIGR-contract env (``digr.contracts.make_env``); side inputs are not attacked.
    :param policy: categorical (logits) or Gaussian (``action_distribution = "gaussian"``, mean actions) policy.
    :param attack: an :class:`digr.attacks.Attack`, or ``None`` for clean observations.
    :param episodes: number of episodes ≥ 1; episode ``i`` uses env seed ``seed + i``; the attack's random draws of a
        wave come from a generator seeded with ``seed +`` the wave's first episode index, so results reproduce for the
        same ``n_parallel``.
    :param progress: called with the number of finished episodes.
    :param n_parallel: environments stepped together (≥ 1).
    :returns: the keys of :func:`digr.evaluation.returns.summarize_episodes` (``episodes``, ``return_mean``,
        ``return_std``, ``return_ci95``, ``success_rate``, ``success_ci95``, ``mean_length``, ``returns``,
        ``successes``, ``lengths``, ``trajectory_ids``: fingerprints of the clean observations each episode showed;
        undefined numbers as ``None``) plus ``flip_rate`` (mean over episodes of the fraction of steps whose greedy
        action on s' differs from the one on the clean s, in [0, 1]; ``None`` for Gaussian policies),
        ``flip_rate_ci95``, ``flip_rates`` (per episode), ``action_shift`` (mean ℓ2 norm of μ(s') − μ(s), Gaussian
        only, else ``None``) and ``attack`` (:meth:`Attack.describe` or ``None``). With ε = 0 the returns equal
        :func:`digr.evaluation.returns.rollout_returns`' exactly.
    :raises ValueError: ``episodes`` < 1 or ``n_parallel`` < 1.
    """
    if episodes < 1 or n_parallel < 1:
        raise ValueError(f"episodes={episodes} and n_parallel={n_parallel} must be ≥ 1")
    gaussian = is_gaussian(policy)
    active = attack is not None and attack.eps != 0
    fingerprints, flips = Fingerprints(), ActionFlips(policy)
    transform = (lambda image, side, generator: attack(policy, image, side, generator=generator)) if active else None
    done = run_episodes(
        env_fn,
        GreedyActor(policy),
        episodes=episodes,
        seed=seed,
        n_envs=n_parallel,
        transform=transform,
        hooks=[fingerprints, flips] if active else [fingerprints],
        progress=progress,
        device=policy_device(policy),
    )
    out = summarize(done, fingerprints)
    for key in ("return_ci95", "success_rate", "success_ci95"):  # JSON-safe: NaN → None
        out[key] = _f(out[key])
    out["successes"] = [_f(x) for x in out["successes"]]
    rates = [flips.rates.get(e.index, 0.0) for e in done]
    flip_mean, flip_ci = (None, None) if gaussian else _ci(rates)
    return {
        **out,
        "flip_rate": flip_mean,
        "flip_rate_ci95": flip_ci,
        "flip_rates": None if gaussian else rates,
        "action_shift": _f(np.mean(rates)) if gaussian else None,
        "attack": None if attack is None else attack.describe(),
    }


def open_loop_attack(
    policy: Policy, image: th.Tensor, side: th.Tensor | None, attack: Attack, batch_size: int = 256, seed: int = 0
) -> dict:
    """Attack a fixed set of states and measure how much the policy's decision moves.

    :param image: float ``[N, C, H, W]`` in [0, 1] (e.g. a held-out dataset / 255); moved to the policy's device in
        batches. :param side: float ``[N, K]`` or None (not attacked).
    :param attack: the :class:`digr.attacks.Attack` (one ε). :param batch_size: frames per attack call (≥ 1).
    :param seed: seeds one ``torch.Generator`` used for the batches in order (results depend on seed and batch size
        only for attacks with random parts).
    :returns: ``{"n", "flip_rate", "flip_rate_ci95", "kl_mean", "kl_ci95", "kl_kind", "action_shift",
        "linf_max", "attack"}``: flip rate = fraction of frames with argmax π(s') ≠ argmax π(s) in [0, 1] (``None``
        for Gaussian policies); KL(π(·|s) ‖ π(·|s')) per frame in nats, averaged (``kl_kind`` = ``"categorical"`` or
        ``"gaussian"``: ½ Σ_j (Δμ_j/σ_j)²); ``action_shift`` = mean ‖μ(s') − μ(s)‖₂ (Gaussian) else ``None``;
        ``linf_max`` = max ‖s' − s‖∞ over frames ([0, 1] units).
    :raises ValueError: empty ``image`` or ``batch_size`` < 1.
    """
    if len(image) == 0:
        raise ValueError("open_loop_attack got no states; pass image [N, C, H, W] with N ≥ 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be ≥ 1")
    device = policy_device(policy)
    gaussian = is_gaussian(policy)
    gen = th.Generator().manual_seed(seed)
    flips, kls, shifts, linf = [], [], [], 0.0
    for i in range(0, len(image), batch_size):
        x = image[i : i + batch_size].to(device)
        s = None if side is None else side[i : i + batch_size].to(device)
        adv = attack(policy, x, s, generator=gen)
        with th.no_grad():
            clean, out = policy(x, s), policy(adv, s)
        kls.append(action_divergence(policy, clean, out).cpu())
        if gaussian:
            shifts.append((out - clean).norm(dim=1).cpu())
        else:
            flips.append((out.argmax(1) != clean.argmax(1)).float().cpu())
        linf = max(linf, float((adv - x).abs().amax())) if adv.numel() else linf
    kl_mean, kl_ci = _ci(th.cat(kls).double().numpy())
    flip_mean, flip_ci = (None, None) if gaussian else _ci(th.cat(flips).double().numpy())
    return {
        "n": len(image),
        "flip_rate": flip_mean,
        "flip_rate_ci95": flip_ci,
        "kl_mean": kl_mean,
        "kl_ci95": kl_ci,
        "kl_kind": "gaussian" if gaussian else "categorical",
        "action_shift": _f(th.cat(shifts).mean()) if gaussian else None,
        "linf_max": linf,
        "attack": attack.describe(),
    }


def robustness_sweep(
    agents: Mapping[str, Policy],
    attacks: Sequence[str],
    eps_list: Sequence[float | str],
    *,
    env_fn: Callable[[], gym.Env] | None = None,
    episodes: int = 20,
    seed: int = 0,
    image: th.Tensor | None = None,
    side: th.Tensor | None = None,
    batch_size: int = 256,
    attack_kwargs: Mapping[str, Mapping] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    n_parallel: int = 32,
    done: Sequence[dict] = (),
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Evaluate every agent under every attack and budget, closed loop (if ``env_fn``) and open loop (if ``image``).

    :param agents: name → policy. :param attacks: names for :func:`digr.attacks.make_attack` (e.g. ``["random",
        "fgsm", "pgd10", "mad", "critic"]``). :param eps_list: budgets ([0, 1] units, floats or strings like "1/255").
    :param env_fn, episodes, seed: closed-loop evaluation (:func:`attacked_rollout_returns`); skipped if ``env_fn`` is None.
    :param image, side, batch_size: open-loop states (:func:`open_loop_attack`, with ``seed``); skipped if ``image`` is None.
    :param attack_kwargs: attack name → extra keyword arguments for ``make_attack`` (``steps``, ``quantize``, ...).
    :param progress: called as ``progress(done, total, label)`` after each (agent, attack, ε) cell.
    :param n_parallel: closed-loop episodes stepped in lockstep (see :func:`attacked_rollout_returns`).
    :param done: rows finished earlier under the same protocol (same agents' weights, episodes, seed, states): a cell
        whose ``(agent, attack, eps)`` and ``attack_config`` match one of them is taken from it, not evaluated again
        (how an interrupted sweep resumes; the caller is responsible for the protocol being the same).
    :param on_row: called with each row as soon as it is finished (evaluated or taken from ``done``), e.g. to save it.
    :returns: a list of JSON-safe rows ``{"agent", "attack", "eps", "eps_255", "eps_label", "attack_config",
        "closed_loop": dict | None, "open_loop": dict | None, "skipped": str | None}``, plus ``"seconds"`` (wall time
        of the cell's evaluation) on evaluated cells; a reused cell keeps the row and seconds it was first made with. ε = 0
        is evaluated once per agent (every attack is the identity there) and shared by all its attacks' rows. The critic
        attack on an agent without a ``value`` method gives rows with ``skipped`` set and no results.
    :raises ValueError: neither ``env_fn`` nor ``image`` given, or a bad attack name / ε (see ``make_attack``).
    """
    if env_fn is None and image is None:
        raise ValueError("robustness_sweep needs env_fn (closed loop) and/or image (open loop); give at least one")
    eps_values = [parse_eps(e) for e in eps_list]
    attack_kwargs = dict(attack_kwargs or {})
    for name in attacks:  # fail on bad names/options before any evaluation
        make_attack(name, 0.0, **attack_kwargs.get(name, {}))
    finished = {(r["agent"], r["attack"], r["eps"]): r for r in done}
    rows, clean_cache = [], {}
    total, n_done = len(agents) * len(attacks) * len(eps_values), 0
    for agent_name, policy in agents.items():
        for name in attacks:
            for eps in eps_values:
                attack = make_attack(name, eps, **attack_kwargs.get(name, {}))
                row = {
                    "agent": agent_name,
                    "attack": name,
                    "eps": eps,
                    "eps_255": eps_to_255(eps),
                    "eps_label": format_eps(eps),
                    "attack_config": attack.describe(),
                    "closed_loop": None,
                    "open_loop": None,
                    "skipped": None,
                }
                earlier = finished.get((agent_name, name, eps))
                if earlier is not None and earlier.get("attack_config") == row["attack_config"]:
                    row = earlier
                    if eps == 0:
                        clean_cache[agent_name] = (row["closed_loop"], row["open_loop"])
                elif name.startswith("critic") and not callable(getattr(policy, "value", None)):
                    row["skipped"] = f"{agent_name} has no value head (critic attack needs policy.value)"
                elif eps == 0 and agent_name in clean_cache:
                    row["closed_loop"], row["open_loop"] = clean_cache[agent_name]
                else:
                    started = time.perf_counter()
                    if env_fn is not None:
                        row["closed_loop"] = attacked_rollout_returns(
                            env_fn, policy, attack, episodes, seed, n_parallel=n_parallel
                        )
                    if image is not None:
                        row["open_loop"] = open_loop_attack(policy, image, side, attack, batch_size, seed)
                    row["seconds"] = round(time.perf_counter() - started, 1)  # a reused cell keeps its own cost
                    if eps == 0:
                        clean_cache[agent_name] = (row["closed_loop"], row["open_loop"])
                rows.append(row)
                if on_row:
                    on_row(row)
                n_done += 1
                if progress:
                    progress(n_done, total, f"{agent_name} {name} eps={format_eps(eps)}")
    return rows
