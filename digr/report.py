"""Figures and the markdown report of a run (``report.md`` beside ``metrics.json``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digr.masks import normalize_per_frame  # noqa: E402

__all__ = ["plot_curve", "plot_saliency_grid", "plot_distill_history", "write_report", "refresh_report", "SECTION_FILES", "distinct_episodes"]


def plot_curve(curve_csv: Path, out_png: Path, title: str) -> None:
    """Teacher learning curve against environment steps: success rate and mean return per rollout (tasks with a
    success signal, y in [0, 1]), or the true game score of finished games and the training return (Atari: episodic
    life, clipped rewards), on a free y scale. Rollouts where no game ended are skipped; curves are moving averages."""
    rows = list(csv.DictReader(curve_csv.open()))
    steps = np.array([float(r["steps"]) for r in rows])
    success = np.array([float(r["success_rate"]) for r in rows])
    has_success = bool(np.isfinite(success).any())
    keys = (("success_rate", "success rate"), ("mean_return", "mean return")) if has_success else \
        (("mean_score", "game score (true, full games)"), ("mean_return", "training return (per life, clipped)"))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for key, label in keys:
        y = np.array([float(r.get(key) or "nan") for r in rows])
        ok = np.isfinite(y)
        if not ok.any():
            continue
        k = max(1, int(ok.sum()) // 40)  # trailing moving average over k rollouts (no zero padding at the ends)
        ax.plot(steps[ok][k - 1 :], np.convolve(y[ok], np.ones(k) / k, mode="valid"), label=f"{label} (moving average of {k})")
    ax.set_xlabel("environment steps")
    if has_success:
        ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_distill_history(histories: dict[str, list[dict]], out_png: Path) -> None:
    """KL and penalty against step for each student."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for name, hist in histories.items():
        steps = [h["step"] for h in hist]
        axes[0].plot(steps, [h["kl"] for h in hist], label=name)
        axes[1].plot(steps, [max(h["penalty"], 1e-12) for h in hist], label=name)
    axes[0].set_title("KL(teacher ‖ student)")
    axes[1].set_title("masked input-gradient penalty")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_saliency_grid(images: np.ndarray, columns: dict[str, np.ndarray], out_png: Path, target_mask: np.ndarray | None = None) -> None:
    """Rows = frames; first column the frame (target cells outlined), then one max-normalised map per column.

    :param images: uint8 ``[N, C, H, W]``. :param columns: name → float ``[N, H, W]`` maps.
    """
    import torch as th

    n = len(images)
    cols = ["frame", *columns]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.9 * len(cols), 1.9 * n), squeeze=False)
    norm = {k: normalize_per_frame(th.as_tensor(v, dtype=th.float32)).numpy() for k, v in columns.items()}
    for i in range(n):
        frame = images[i].transpose(1, 2, 0)
        frame = frame[..., 0] if frame.shape[2] == 1 else frame[..., :3]
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "frame":
                ax.imshow(frame, cmap="gray" if frame.ndim == 2 else None)
                if target_mask is not None and target_mask[i].any():
                    ax.contour(target_mask[i], levels=[0.5], colors="red", linewidths=0.8)
            else:
                ax.imshow(frame, cmap="gray" if frame.ndim == 2 else None)
                ax.imshow(norm[name][i], cmap="inferno", alpha=0.7, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def _fmt(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None or not np.isfinite(m["mean"]):
        return "–"
    ci = m.get("ci95")
    return f"{m['mean']:.{digits}f} ± {ci:.{digits}f}" if ci is not None and np.isfinite(ci) else f"{m['mean']:.{digits}f}"


def distinct_episodes(rollout: dict) -> int:
    """How many different games an agent actually played among a rollout summary's episodes
    (:func:`digr.evaluate.summarize_episodes`): the number of different ``trajectory_ids`` (fingerprints of the
    observation sequences, :class:`digr.evaluate.TrajectoryHash`); for summaries written before those were recorded,
    the number of different (return, length) pairs, a lower bound (different games can share return and length).

    :raises KeyError: the summary has neither ``trajectory_ids`` nor ``returns`` and ``lengths``.
    """
    if rollout.get("trajectory_ids"):
        return len(set(rollout["trajectory_ids"]))
    return len(set(zip(rollout["returns"], rollout["lengths"])))


SECTION_FILES = ("saliency_bench/section.md", "attack/section.md")


def write_report(run_path: Path, metrics: dict, cfg_dict: dict) -> Path:
    """Write ``report.md`` from ``metrics.json`` content, the figures already in ``run_path`` and the extra sections of
    :data:`SECTION_FILES` that exist."""
    t = metrics["teacher"]
    lines = [f"# DIGR run `{cfg_dict['name']}`", "",
             f"Environment `{cfg_dict['env']['id']}`; teacher: SB3 PPO, {t.get('num_timesteps', '?')} environment steps; "
             f"seed {cfg_dict['seed']}. Method: our reconstruction of Xing et al. 2022 (arXiv 2205.08685); see README.", ""]
    lines += ["## Returns", "", f"{metrics['eval_episodes']} episodes per agent, seeds {metrics['eval_seed']}…, greedy actions. "
              "± = 95 % confidence half-width, treating episodes as independent. *Distinct* counts episodes that showed the agent "
              "different observation sequences: a greedy agent in a deterministic env replays the same game from equivalent "
              "starts (Atari no-op starts), and where distinct ≪ episodes the ± is optimistic.", "",
              "| agent | λ | mask | success rate | return | mean length | distinct episodes | success / teacher (return / teacher without success) "
              "| action agreement with teacher (held-out) |",
              "|---|---|---|---|---|---|---|---|---|"]
    ts = t["rollout"]["success_rate"]
    key = "success_rate" if ts == ts else "return_mean"  # NaN success: envs scored by return (Atari)
    tv = t["rollout"][key]

    def row(name, a, lam="–", mask="–"):
        r = a["rollout"]
        ratio = f"{r[key] / tv:.3f}" if tv > 0 else "–"
        agree = f"{a['action_agreement']:.3f}" if "action_agreement" in a else "–"
        return (f"| {name} | {lam} | {mask} | {r['success_rate']:.3f} ± {r['success_ci95']:.3f} | {r['return_mean']:.3f} ± "
                f"{r['return_ci95']:.3f} | {r['mean_length']:.1f} | {distinct_episodes(r)} / {r['episodes']} | {ratio} | {agree} |")

    lines.append(row("teacher", t))
    for name, s in metrics["students"].items():
        lines.append(row(name, s, s["lam"], s["mask"]))
    p = metrics["top_percent"]
    lines += ["", "## Saliency quality on held-out frames", "",
              f"{metrics['heldout_frames']} held-out frames. Agreement is with the teacher's perturbation map (Greydanus et al. "
              f"2018); localisation is on the ground-truth target-object cells. Students: vanilla input gradient of log π(a|s) for "
              f"their own greedy action.", "",
              f"| map | Spearman ρ | IoU top-{p:g}% | mass inside target | pointing game |", "|---|---|---|---|---|"]
    iou = f"iou_top{p:g}"
    for name, q in metrics["maps"].items():
        lines.append(f"| {name} | {_fmt(q.get('spearman'))} | {_fmt(q.get(iou))} | {_fmt(q.get('mass_inside'))} | {_fmt(q.get('pointing_game'))} |")
    lat = metrics["latency"]
    lines += ["", "## Time per saliency map", "", f"Median of repeated calls on the same held-out frames, {lat['threads']} CPU threads.", "",
              "| map | batch | ms / frame | forward passes / frame |", "|---|---|---|---|"]
    for entry in lat["rows"]:
        lines.append(f"| {entry['map']} | {entry['batch']} | {entry['ms_per_frame']:.3f} | {entry['passes']} |")
    for b, ratio in lat["ratio"].items():
        lines.append("")
        lines.append(f"Teacher perturbation / student gradient at batch {b}: **{ratio:.0f}×**.")
    lines += ["", "## Figures", ""]
    for png, caption in (("teacher_curve.png", "Teacher learning curve (training rollouts, stochastic policy)"),
                         ("saliency_grid.png", "Frame (target outlined) | teacher perturbation | teacher gradient | student gradients"),
                         ("distill_curves.png", "Distillation losses")):
        if (run_path / png).exists():
            lines.append(f"![{caption}]({png})")
            lines.append(f"*{caption}.*")
            lines.append("")
    lines += ["## Masks", "", f"Fraction of pixels marked non-salient (penalised) by the selective mask on training frames: "
              f"{metrics['mask_fraction']:.3f} (κ = {cfg_dict['mask']['kappa']}, top_p = {cfg_dict['mask']['top_p']}, dilate = "
              f"{cfg_dict['mask']['dilate']}).", ""]
    for section in SECTION_FILES:  # written by `digr saliency-bench` and `digr attack`
        if (run_path / section).is_file():
            lines += [(run_path / section).read_text()]
    out = run_path / "report.md"
    out.write_text("\n".join(lines) + "\n")
    (run_path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return out


def refresh_report(run_path: Path) -> Path | None:
    """Rebuild ``report.md`` from ``metrics.json`` and ``config.yml`` (to pick up new sections); None if there is no
    evaluation yet (the sections then join the report when ``digr evaluate`` writes it)."""
    import yaml

    m, c = run_path / "metrics.json", run_path / "config.yml"
    if not (m.is_file() and c.is_file()):
        return None
    return write_report(run_path, json.loads(m.read_text()), yaml.safe_load(c.read_text()))
