"""Robustness of policies under ℓ∞ observation attacks (:mod:`digr.attacks`): closed-loop returns, open-loop action
flips and divergence, a markdown table and a return-vs-ε figure.

* **Closed loop** (:func:`attacked_rollout_returns`): the attacker perturbs every image observation the agent sees for
  whole episodes (the evaluation protocol of SA-DQN/SA-PPO, Zhang et al. 2020, arXiv 2003.08938); the agent acts
  greedily on the attacked observation. Conventions follow :func:`digr.evaluate.rollout_returns`: episode ``i`` uses
  env seed ``seed + i`` and the attack's random parts use a ``torch.Generator`` seeded with ``seed + i``, so every
  agent faces the same layouts and a run reproduces exactly.
* **Open loop** (:func:`open_loop_attack`): on a fixed set of states, the fraction of frames whose greedy action
  changes (action-flip rate; Huang et al. 2017, arXiv 1702.02284) and the mean KL(π(·|s) ‖ π(·|s')) (for Gaussian
  policies the closed-form KL ½ Σ_j (Δμ_j/σ_j)², plus the ℓ2 shift of the mean action).
* :func:`robustness_sweep` runs both over agents × attacks × ε and returns a list of plain JSON-safe row dicts
  (undefined values are ``None``, never NaN) that :func:`robustness_table` and :func:`plot_return_vs_eps` consume.

95 % CIs are normal-approximation half-widths (:func:`digr.metrics.nanmean_ci`); ``None`` where undefined (n < 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from digr.attacks import Attack, action_divergence, eps_to_255, format_eps, greedy_actions, is_gaussian, make_attack, parse_eps
from digr.metrics import nanmean_ci
from digr.evaluate import TrajectoryHash, summarize_episodes
from digr.policies import obs_to_tensors

__all__ = ["attacked_rollout_returns", "open_loop_attack", "robustness_sweep", "robustness_table", "plot_return_vs_eps"]


def _f(x) -> float | None:
    """Python float, or None for NaN/inf/None (JSON-safe)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(values) -> tuple[float | None, float | None]:
    mean, hw, _ = nanmean_ci(values)
    return _f(mean), _f(hw)


def _device(policy: nn.Module) -> th.device:
    try:
        return next(policy.parameters()).device
    except (StopIteration, AttributeError):
        return th.device("cpu")


def _env_action(policy: nn.Module, output: th.Tensor, env: gym.Env):
    """Greedy env action from the output of one frame: int (categorical) or float32 array clipped to the Box (Gaussian)."""
    if not is_gaussian(policy):
        return int(output.argmax(1))
    a = output[0].detach().cpu().numpy().astype(np.float32)
    space = env.action_space
    return np.clip(a, space.low, space.high) if isinstance(space, gym.spaces.Box) else a


def _stack_obs(obs_list: list[dict], device) -> tuple[th.Tensor, th.Tensor | None]:
    batch = {"image": np.stack([o["image"] for o in obs_list])}
    if "side" in obs_list[0]:
        batch["side"] = np.stack([o["side"] for o in obs_list])
    return obs_to_tensors(batch, device)


def attacked_rollout_returns(env_fn: Callable[[], gym.Env], policy: nn.Module, attack: Attack | None, episodes: int, seed: int,
                             progress: Callable[[int], None] | None = None, n_parallel: int = 32) -> dict:
    """Run ``episodes`` full episodes with ``attack`` perturbing every image observation; greedy actions on s'.

    Episodes run in lockstep waves of up to ``n_parallel`` environments: at each step the observations of all running
    episodes of a wave are attacked as one batch (an attack such as PGD-50 costs 50 forward and backward passes per
    step, so batching across episodes is what makes ≥ 100 attacked episodes affordable on a CPU).

    :param env_fn: builds a DIGR-contract env (``digr.envs_contract.make_env``); side inputs are not attacked.
    :param policy: categorical (logits) or Gaussian (``action_distribution = "gaussian"``, mean actions) policy.
    :param attack: an :class:`digr.attacks.Attack`, or ``None`` for clean observations.
    :param episodes: number of episodes ≥ 1; episode ``i`` uses env seed ``seed + i``; the attack's random draws of a
        wave come from a generator seeded with ``seed +`` the wave's first episode index, so results reproduce for the
        same ``n_parallel``.
    :param progress: called with the number of finished episodes.
    :param n_parallel: environments stepped together (≥ 1).
    :returns: the keys of :func:`digr.evaluate.rollout_returns` (``episodes``, ``return_mean``, ``return_std``,
        ``return_ci95``, ``success_rate``, ``success_ci95``, ``mean_length``, ``returns``, ``successes``, ``lengths``,
        ``trajectory_ids``: fingerprints of the clean observations each episode showed)
        plus ``flip_rate`` (mean over episodes of the fraction of steps whose greedy action on s' differs from the one
        on the clean s, in [0, 1]; ``None`` for Gaussian policies), ``flip_rate_ci95``, ``flip_rates`` (per episode),
        ``action_shift`` (mean ℓ2 norm of μ(s') − μ(s), Gaussian only, else ``None``) and ``attack``
        (:meth:`Attack.describe` or ``None``). With ε = 0 the returns equal ``rollout_returns``' exactly.
    :raises ValueError: ``episodes`` < 1 or ``n_parallel`` < 1.
    """
    if episodes < 1 or n_parallel < 1:
        raise ValueError(f"episodes={episodes} and n_parallel={n_parallel} must be ≥ 1")
    device = _device(policy)
    gaussian = is_gaussian(policy)
    envs = [env_fn() for _ in range(min(episodes, n_parallel))]
    returns, successes, lengths, flips, shifts = [0.0] * episodes, [float("nan")] * episodes, [0] * episodes, [0.0] * episodes, [0.0] * episodes
    ids = [""] * episodes
    finished = 0
    try:
        for first in range(0, episodes, len(envs)):
            wave = list(range(first, min(episodes, first + len(envs))))
            gen = th.Generator().manual_seed(seed + first)
            obs = {i: envs[k].reset(seed=seed + i)[0] for k, i in enumerate(wave)}
            trajectory = {i: TrajectoryHash() for i in wave}
            env_of = {i: envs[k] for k, i in enumerate(wave)}
            n_flips = dict.fromkeys(wave, 0)
            shift = dict.fromkeys(wave, 0.0)
            running = list(wave)
            while running:
                for i in running:
                    trajectory[i].update(obs[i])
                image, side = _stack_obs([obs[i] for i in running], device)
                with th.no_grad():
                    clean = policy(image, side)
                if attack is None or attack.eps == 0:
                    out = clean
                else:
                    adv = attack(policy, image, side, generator=gen)
                    with th.no_grad():
                        out = policy(adv, side)
                if gaussian:
                    moved = (out - clean).norm(dim=1).tolist()
                else:
                    moved = (out.argmax(1) != clean.argmax(1)).tolist()
                still = []
                for row, i in enumerate(running):
                    env = env_of[i]
                    o, reward, terminated, truncated, info = env.step(_env_action(policy, out[row : row + 1], env))
                    returns[i] += float(reward)
                    lengths[i] += 1
                    if gaussian:
                        shift[i] += float(moved[row])
                    else:
                        n_flips[i] += int(moved[row])
                    if terminated or truncated:
                        successes[i] = float(info["is_success"]) if "is_success" in info else float("nan")  # Atari: score only
                        flips[i], shifts[i] = n_flips[i] / lengths[i], shift[i] / lengths[i]
                        ids[i] = trajectory[i].hexdigest()
                        finished += 1
                        if progress:
                            progress(finished)
                    else:
                        obs[i] = o
                        still.append(i)
                running = still
    finally:
        for env in envs:
            env.close()
    out = summarize_episodes(returns, successes, lengths, ids)
    for key in ("return_ci95", "success_rate", "success_ci95"):  # JSON-safe: NaN → None
        out[key] = _f(out[key])
    out["successes"] = [_f(x) for x in successes]
    flip_mean, flip_ci = (None, None) if gaussian else _ci(flips)
    return {**out,
            "flip_rate": flip_mean, "flip_rate_ci95": flip_ci, "flip_rates": None if gaussian else flips,
            "action_shift": _f(np.mean(shifts)) if gaussian else None,
            "attack": None if attack is None else attack.describe()}


def open_loop_attack(policy: nn.Module, image: th.Tensor, side: th.Tensor | None, attack: Attack, batch_size: int = 256,
                     seed: int = 0) -> dict:
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
    device = _device(policy)
    gaussian = is_gaussian(policy)
    gen = th.Generator().manual_seed(seed)
    flips, kls, shifts, linf = [], [], [], 0.0
    for i in range(0, len(image), batch_size):
        x = image[i:i + batch_size].to(device)
        s = None if side is None else side[i:i + batch_size].to(device)
        adv = attack(policy, x, s, generator=gen)
        with th.no_grad():
            clean, out = policy(x, s), policy(adv, s)
        kls.append(action_divergence(policy, clean, out).cpu())
        if gaussian:
            shifts.append((out - clean).norm(dim=1).cpu())
        else:
            flips.append((greedy_actions(policy, out) != greedy_actions(policy, clean)).float().cpu())
        linf = max(linf, float((adv - x).abs().amax())) if adv.numel() else linf
    kl_mean, kl_ci = _ci(th.cat(kls).double().numpy())
    flip_mean, flip_ci = (None, None) if gaussian else _ci(th.cat(flips).double().numpy())
    return {"n": int(len(image)), "flip_rate": flip_mean, "flip_rate_ci95": flip_ci, "kl_mean": kl_mean, "kl_ci95": kl_ci,
            "kl_kind": "gaussian" if gaussian else "categorical",
            "action_shift": _f(th.cat(shifts).mean()) if gaussian else None, "linf_max": linf, "attack": attack.describe()}


def robustness_sweep(agents: Mapping[str, nn.Module], attacks: Sequence[str], eps_list: Sequence[float | str], *,
                     env_fn: Callable[[], gym.Env] | None = None, episodes: int = 20, seed: int = 0,
                     image: th.Tensor | None = None, side: th.Tensor | None = None, batch_size: int = 256,
                     attack_kwargs: Mapping[str, Mapping] | None = None,
                     progress: Callable[[int, int, str], None] | None = None, n_parallel: int = 32,
                     done: Sequence[dict] = (), on_row: Callable[[dict], None] | None = None) -> list[dict]:
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
        "closed_loop": dict | None, "open_loop": dict | None, "skipped": str | None}``. ε = 0 is evaluated once per
        agent (every attack is the identity there) and shared by all its attacks' rows. The critic attack on an agent
        without a ``value`` method gives rows with ``skipped`` set and no results.
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
                row = {"agent": agent_name, "attack": name, "eps": eps, "eps_255": eps_to_255(eps),
                       "eps_label": format_eps(eps),
                       "attack_config": attack.describe(), "closed_loop": None, "open_loop": None, "skipped": None}
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
                    if env_fn is not None:
                        row["closed_loop"] = attacked_rollout_returns(env_fn, policy, attack, episodes, seed, n_parallel=n_parallel)
                    if image is not None:
                        row["open_loop"] = open_loop_attack(policy, image, side, attack, batch_size, seed)
                    if eps == 0:
                        clean_cache[agent_name] = (row["closed_loop"], row["open_loop"])
                rows.append(row)
                if on_row:
                    on_row(row)
                n_done += 1
                if progress:
                    progress(n_done, total, f"{agent_name} {name} eps={format_eps(eps)}")
    return rows


def _rows(results) -> list[dict]:
    if isinstance(results, Mapping):
        results = results.get("rows", [])
    return list(results)


def _pm(mean, ci, fmt: str = "{:.3f}") -> str:
    if mean is None:
        return "n/a"
    return fmt.format(mean) + ("" if ci is None else " ± " + fmt.format(ci))


def robustness_table(results: Sequence[dict] | Mapping) -> str:
    """Markdown table of sweep rows (:func:`robustness_sweep`; a dict with a ``"rows"`` list also works).

    Columns: agent, attack, ε (/255), closed-loop return (mean ± 95 % CI), success rate, closed-loop flip rate,
    open-loop flip rate and KL (mean ± CI). Missing parts show ``n/a``; skipped rows show the reason.
    :returns: the table as a string (header and one line per row, in the rows' order).
    """
    lines = ["| agent | attack | ε (/255) | return | success | flip rate (closed loop) | flip rate (open loop) "
             "| KL (open loop) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in _rows(results):
        eps = r.get("eps_label") or format_eps(r["eps"])
        if r.get("skipped"):
            lines.append(f"| {r['agent']} | {r['attack']} | {eps} | skipped: {r['skipped']} | | | | |")
            continue
        cl, ol = r.get("closed_loop") or {}, r.get("open_loop") or {}
        lines.append("| " + " | ".join([
            str(r["agent"]), str(r["attack"]), eps,
            _pm(cl.get("return_mean"), cl.get("return_ci95")), _pm(cl.get("success_rate"), cl.get("success_ci95"), "{:.2f}"),
            _pm(cl.get("flip_rate"), cl.get("flip_rate_ci95"), "{:.2f}"),
            _pm(ol.get("flip_rate"), ol.get("flip_rate_ci95"), "{:.2f}"),
            _pm(ol.get("kl_mean"), ol.get("kl_ci95"), "{:.3g}")]) + " |")
    return "\n".join(lines) + "\n"


def plot_return_vs_eps(results: Sequence[dict] | Mapping, path: str | Path) -> Path:
    """Closed-loop return against ε: one subplot per attack, one line per agent, 95 % CI error bars.

    Uses matplotlib's object API with the Agg canvas (no global backend change). Rows without closed-loop results
    (skipped, open-loop only) are left out.

    :param results: sweep rows (:func:`robustness_sweep`). :param path: output image (format from the suffix, e.g. .png).
    :returns: ``path`` as a Path.
    :raises ValueError: no row has closed-loop results.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in _rows(results) if r.get("closed_loop") and not r.get("skipped")]
    if not rows:
        raise ValueError("no closed-loop results to plot; run robustness_sweep with env_fn")
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    fig = Figure(figsize=(3.4 * len(attacks), 3.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(attacks), squeeze=False, sharey=True)[0]
    for ax, name in zip(axes, attacks):
        for agent in agents:
            pts = sorted((r["eps_255"], r["closed_loop"]["return_mean"], r["closed_loop"].get("return_ci95"))
                         for r in rows if r["attack"] == name and r["agent"] == agent)
            if not pts:
                continue
            x, y, ci = zip(*pts)
            yerr = [0.0 if c is None or not math.isfinite(c) else c for c in ci]
            ax.errorbar(x, y, yerr=yerr, marker="o", ms=3, capsize=2, label=agent)
        ax.set_title(name)
        ax.set_xlabel("ε (/255)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("return (mean ± 95 % CI)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
