"""Every figure DIGR draws, from rows and arrays the computation modules return, in the one style of
:mod:`digr.report.style`. Each function writes one image file (format from the suffix) and returns its path."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digr.report.style import AGENT_COLORS, figure, saliency_cmap

__all__ = ["plot_curve", "plot_distill_history", "plot_quality_vs_cost", "plot_return_vs_eps", "plot_saliency_grid"]


def _color(agent: str, i: int) -> str:
    return AGENT_COLORS.get(agent, f"C{(i + 4) % 10}")


def _normalize(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (all-zero maps stay zero), float ``[N, H, W]`` in [0, 1]."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = np.maximum(maps.reshape(len(maps), -1).max(axis=1), 1e-12)
    return maps / peak[:, None, None]


def plot_curve(curve_csv: Path, out_png: Path, title: str) -> Path:
    """Teacher learning curve against environment steps, from the teacher's ``curve.csv``
    (:mod:`digr.policies.ppo`): success rate and mean return per rollout (tasks with a success signal, y in [0, 1]),
    or the true game score of finished games and the training return (Atari: episodic life, clipped rewards), on a free
    y scale. Rollouts where no game ended are skipped; curves are trailing moving averages (no zero padding)."""
    with Path(curve_csv).open(newline="") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["steps"]) for r in rows])
    success = np.array([float(r["success_rate"]) for r in rows])
    has_success = bool(np.isfinite(success).any())
    keys = (
        (("success_rate", "success rate"), ("mean_return", "mean return"))
        if has_success
        else (("mean_score", "game score (true, full games)"), ("mean_return", "training return (per life, clipped)"))
    )
    with figure(out_png, 6, 3.2) as (_, axes):
        ax = axes[0, 0]
        for key, label in keys:
            y = np.array([float(r.get(key) or "nan") for r in rows])
            ok = np.isfinite(y)
            if not ok.any():
                continue
            k = max(1, int(ok.sum()) // 40)
            ax.plot(
                steps[ok][k - 1 :], np.convolve(y[ok], np.ones(k) / k, mode="valid"), label=f"{label} (moving average of {k})"
            )
        ax.set_xlabel("environment steps")
        if has_success:
            ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.legend()
    return Path(out_png)


def plot_distill_history(histories: dict[str, list[dict]], out_png: Path) -> Path:
    """KL and masked penalty against training step for each student (histories of
    :func:`digr.method.distill.train_student`), log y axes."""
    with figure(out_png, 8, 3, 1, 2) as (_, axes):
        for i, (name, hist) in enumerate(histories.items()):
            steps = [h["step"] for h in hist]
            axes[0, 0].plot(steps, [h["kl"] for h in hist], label=name, color=_color(name, i))
            axes[0, 1].plot(steps, [max(h["penalty"], 1e-12) for h in hist], label=name, color=_color(name, i))
        for ax, title in zip(axes[0], ("KL(teacher ‖ student)", "masked input-gradient penalty")):
            ax.set_title(title)
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.legend()
    return Path(out_png)


def plot_saliency_grid(
    images: np.ndarray, columns: dict[str, np.ndarray], out_png: Path, target_mask: np.ndarray | None = None
) -> Path:
    """Rows = frames; the first column shows the frame (target pixels outlined in red), then one saliency overlay per
    column: each map max-normalised per frame, drawn with :func:`digr.report.style.saliency_cmap` at alpha 0.7.

    :param images: uint8 ``[N, C, H, W]`` (the first 3 channels are shown as RGB, one channel as grey).
    :param columns: name → float ``[N, H, W]`` maps. :param target_mask: bool ``[N, H, W]`` or None.
    """
    n, cols = len(images), ["frame", *columns]
    norm = {k: _normalize(v) for k, v in columns.items()}
    with figure(out_png, 1.9 * len(cols), 1.9 * n, n, len(cols)) as (_, axes):
        for i in range(n):
            frame = images[i].transpose(1, 2, 0)
            frame = frame[..., 0] if frame.shape[2] == 1 else frame[..., :3]
            for j, name in enumerate(cols):
                ax = axes[i, j]
                ax.set_axis_off()
                ax.imshow(frame, cmap="gray" if frame.ndim == 2 else None)
                if name == "frame":
                    if target_mask is not None and target_mask[i].any():
                        ax.contour(target_mask[i], levels=[0.5], colors="red", linewidths=0.8)
                else:
                    ax.imshow(norm[name][i], cmap=saliency_cmap(), alpha=0.7, vmin=0, vmax=1)
                if i == 0:
                    ax.set_title(name)
    return Path(out_png)


def plot_return_vs_eps(rows: Sequence[dict], out_png: Path) -> Path:
    """Closed-loop return against ε (/255): one panel per attack, one line per agent, 95 % CI error bars, from attack
    rows (:func:`digr.evaluation.robustness.robustness_sweep`). Rows without closed-loop results are left out.

    :raises ValueError: no row has closed-loop results.
    """
    rows = [r for r in rows if r.get("closed_loop") and not r.get("skipped")]
    if not rows:
        raise ValueError("no closed-loop results to plot; run the attack sweep with an environment")
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    with figure(out_png, 3.4 * len(attacks), 3.0, 1, len(attacks), sharey=True) as (_, axes):
        for ax, name in zip(axes[0], attacks):
            for i, agent in enumerate(agents):
                pts = sorted(
                    (r["eps_255"], r["closed_loop"]["return_mean"], r["closed_loop"].get("return_ci95"))
                    for r in rows
                    if r["attack"] == name and r["agent"] == agent
                )
                if not pts:
                    continue
                x, y, ci = zip(*pts)
                yerr = [0.0 if c is None or not math.isfinite(c) else c for c in ci]
                ax.errorbar(x, y, yerr=yerr, marker="o", ms=3, capsize=2, label=agent, color=_color(agent, i))
            ax.set_title(name)
            ax.set_xlabel("ε (/255)")
        axes[0, 0].set_ylabel("return (mean ± 95 % CI)")
        axes[0, 0].legend()
    return Path(out_png)


def plot_quality_vs_cost(results: dict, out_png: Path) -> Path:
    """Agreement (Spearman ρ with the reference map) against ms per frame at the latency batch (log x), one colour
    per agent and one marker per method, from :func:`digr.evaluation.saliency_bench.bench_methods` results."""
    b = str(results["latency_batch"])
    agents = list(dict.fromkeys(r["agent"] for r in results["rows"]))
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    markers = "osD^v<>pP*Xh8"
    with figure(out_png, 8.5, 5.5) as (_, axes):
        ax = axes[0, 0]
        for i, agent in enumerate(agents):
            for r in (r for r in results["rows"] if r["agent"] == agent):
                j = methods.index(r["method"])
                ax.scatter(
                    r["ms_per_frame"][b],
                    r["spearman"]["mean"],
                    color=_color(agent, i),
                    marker=markers[j % len(markers)],
                    s=45,
                    label=agent if j == 0 else None,
                )
        for j, m in enumerate(methods):
            ax.scatter([], [], color="grey", marker=markers[j % len(markers)], label=m)
        ax.set_xscale("log")
        ax.set_xlabel(f"time per map, ms/frame at batch {b} (log)")
        ax.set_ylabel(f"Spearman ρ with {results['reference']}")
        ax.set_title("Saliency quality vs cost")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    return Path(out_png)
