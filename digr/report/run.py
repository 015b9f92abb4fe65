"""Rendering of a run's ``report.md`` from its metrics (returns, saliency quality, latency, masks), figures and the
sections of ``digr saliency-bench`` and ``digr attack``."""

from __future__ import annotations

import numpy as np

from digr.evaluation.returns import distinct_episodes

__all__ = ["FIGURES", "run_report"]


def _fmt(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None or not np.isfinite(m["mean"]):
        return "–"
    ci = m.get("ci95")
    return f"{m['mean']:.{digits}f} ± {ci:.{digits}f}" if ci is not None and np.isfinite(ci) else f"{m['mean']:.{digits}f}"


#: Captions of the run report's figures, by name (the pipeline links the ones that exist).
FIGURES = {
    "teacher_curve": "Teacher learning curve (training rollouts, stochastic policy)",
    "saliency_grid": "Frame (target outlined) | teacher perturbation | teacher gradient | student gradients",
    "distill_curves": "Distillation losses",
}


def run_report(metrics: dict, cfg_dict: dict, figures: dict[str, str], sections: list[str]) -> str:
    """The markdown of a run's ``report.md``.

    :param metrics: ``metrics.json`` content (:mod:`digr.evaluation.run_metrics`, plus ``latency`` and
        ``mask_fraction``). :param cfg_dict: the config the evaluation was made with.
    :param figures: figure name (a key of :data:`FIGURES`) → link relative to the report, for the figures that exist.
    :param sections: more markdown sections to append (saliency bench, attacks: :mod:`digr.report.bench`,
        :mod:`digr.report.attack`).
    """
    t, tc = metrics["teacher"], cfg_dict["teacher"]
    if tc.get("kind") == "imitation":
        rounds = tc.get("imitation", {}).get("dagger_rounds", "?")
        made = f"imitation of `{tc.get('expert')}` (behaviour cloning + {rounds} DAgger rounds), "
        made += f"{t.get('num_timesteps', '?')} expert-labelled states"
    else:
        made = f"SB3 PPO, {t.get('num_timesteps', '?')} environment steps"
    actions = "greedy actions" if cfg_dict["evaluate"].get("deterministic", True) else "actions sampled from each policy"
    lines = [
        f"# DIGR run `{cfg_dict['name']}`",
        "",
        f"Environment `{cfg_dict['env']['id']}`; teacher: {made}; "
        f"seed {cfg_dict['seed']}. Method: our reconstruction of Xing et al. 2022 (arXiv 2205.08685); see README.",
        "",
    ]
    lines += [
        "## Returns",
        "",
        f"{metrics['eval_episodes']} episodes per agent, seeds {metrics['eval_seed']}…, {actions}. "
        "± = 95 % confidence half-width, treating episodes as independent. *Distinct* counts episodes that showed the agent "
        "different observation sequences: a greedy agent in a deterministic env replays the same game from equivalent "
        "starts (Atari no-op starts), and where distinct ≪ episodes the ± is optimistic.",
        "",
        "| agent | λ | mask | success rate | return | mean length | distinct episodes "
        "| success / teacher (return / teacher without success) | action agreement with teacher (held-out) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ts = t["rollout"]["success_rate"]
    key = "success_rate" if ts == ts else "return_mean"  # NaN success: envs scored by return (Atari)
    tv = t["rollout"][key]

    def row(name, a, lam="–", mask="–"):
        r = a["rollout"]
        ratio = f"{r[key] / tv:.3f}" if tv > 0 else "–"
        agree = f"{a['action_agreement']:.3f}" if "action_agreement" in a else "–"
        return (
            f"| {name} | {lam} | {mask} | {r['success_rate']:.3f} ± {r['success_ci95']:.3f} | {r['return_mean']:.3f} ± "
            f"{r['return_ci95']:.3f} | {r['mean_length']:.1f} | {distinct_episodes(r)} / {r['episodes']} | {ratio} | {agree} |"
        )

    lines.append(row("teacher", t))
    for name, s in metrics["students"].items():
        lines.append(row(name, s, s["lam"], s["mask"]))
    lines += _compare_table(metrics, cfg_dict["evaluate"])
    p = metrics["top_percent"]
    lines += [
        "",
        "## Saliency quality on held-out frames",
        "",
        f"{metrics['heldout_frames']} held-out frames. Agreement is with the teacher's perturbation map (Greydanus et al. "
        f"2018); localisation is on the env's ground-truth target mask (MiniGrid: the target object's cells; CarRacing: "
        f"the road) and its other regions. Students: vanilla input gradient of log π(a|s) for their own greedy action.",
        "",
    ]
    regions = sorted(
        {k.removeprefix("mass_inside_") for q in metrics["maps"].values() for k in q if k.startswith("mass_inside_")}
    )
    extra = "".join(f" mass inside {r} | pointing {r} |" for r in regions)
    lines += [
        f"| map | Spearman ρ | IoU top-{p:g}% | mass inside target | pointing game |{extra}",
        "|---" * (5 + 2 * len(regions)) + "|",
    ]
    iou = f"iou_top{p:g}"
    for name, q in metrics["maps"].items():
        cells = [q.get(k) for k in ("spearman", iou, "mass_inside", "pointing_game")]
        cells += [q.get(f"{m}_{r}") for r in regions for m in ("mass_inside", "pointing_game")]
        lines.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
    lines += _independent_table(metrics)
    lat = metrics["latency"]
    lines += [
        "",
        "## Time per saliency map",
        "",
        f"Median of repeated calls on the same held-out frames, {lat['threads']} CPU threads.",
        "",
        "| map | batch | ms / frame | forward passes / frame |",
        "|---|---|---|---|",
    ]
    for entry in lat["rows"]:
        lines.append(f"| {entry['map']} | {entry['batch']} | {entry['ms_per_frame']:.3f} | {entry['passes']} |")
    for b, ratio in lat["ratio"].items():
        lines.append("")
        lines.append(f"Teacher perturbation / student gradient at batch {b}: **{ratio:.0f}×**.")
    lines += ["", "## Figures", ""]
    for name, link in figures.items():
        lines += [f"![{FIGURES[name]}]({link})", f"*{FIGURES[name]}.*", ""]
    lines += [
        "## Masks",
        "",
        f"Fraction of pixels marked non-salient (penalised) by the selective mask on training frames: "
        f"{metrics['mask_fraction']:.3f} (κ = {cfg_dict['mask']['kappa']}, top_p = {cfg_dict['mask']['top_p']}, dilate = "
        f"{cfg_dict['mask']['dilate']}).",
        "",
    ]
    lines += sections
    return "\n".join(lines) + "\n"


def _compare_table(metrics: dict, evaluate: dict) -> list[str]:
    """Returns under the second evaluation protocol (``evaluate.compare_env_kwargs``), when the run measured one."""
    agents = {"teacher": metrics["teacher"], **metrics["students"]}
    if not all("rollout_compare" in a for a in agents.values()):
        return []
    lines = [
        "",
        f"Beside it, the {evaluate.get('compare_label', 'second protocol')} (env kwargs "
        f"`{evaluate.get('compare_env_kwargs')}` instead of `{evaluate.get('env_kwargs') or {}}`), same episode seeds:",
        "",
        "| agent | return | mean length | distinct episodes |",
        "|---|---|---|---|",
    ]
    for name, a in agents.items():
        r = a["rollout_compare"]
        lines.append(f"| {name} | {r['return_mean']:.3f} ± {r['return_ci95']:.3f} | {r['mean_length']:.1f} | "
                     f"{distinct_episodes(r)} / {r['episodes']} |")  # fmt: skip
    return lines


def _independent_table(metrics: dict) -> list[str]:
    """The report's table of saliency evidence that did not build DIGR's mask (:mod:`digr.evaluation.independent`);
    empty when the run did not compute it (``evaluate.independent_frames: 0``)."""
    p = metrics["top_percent"]
    keys = ("spearman_occlusion", f"iou_top{p:g}_occlusion", "deletion_auc", "insertion_auc", "insertion_minus_deletion")
    rows = {name: q for name, q in metrics["maps"].items() if any(k in q for k in keys)}
    if not rows:
        return []
    n = max(q[k]["n"] for q in rows.values() for k in keys if k in q)
    lines = [
        "",
        "## Saliency evidence independent of the mask",
        "",
        f"On the first {n} held-out frames. DIGR's mask comes from the teacher's perturbation map, so agreement with that "
        "map partly measures DIGR's training target. These columns do not use it: agreement with the teacher's occlusion "
        "map (Zeiler & Fergus 2014), and each map's faithfulness to the policy it explains (the teacher's maps to the "
        "teacher, a student's map to that student): area under π(a|s') as the map's top pixels are replaced by the "
        "blurred frame (deletion, lower is better) or revealed on it (insertion, higher is better; Petsiuk et al. 2018).",
        "",
        f"| map | Spearman ρ vs occlusion | IoU top-{p:g}% vs occlusion | deletion AUC ↓ | insertion AUC ↑ "
        "| insertion − deletion ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for name, q in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(q.get(k)) for k in keys) + " |")
    return lines
