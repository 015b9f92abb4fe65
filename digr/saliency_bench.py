"""``digr saliency-bench``: every saliency method on the teacher and on each student, quality against cost, one table.

For each agent (the teacher and every student of the run) and each method of ``saliency_bench.methods``, on the same
held-out frames (the agent explains its own greedy action), it measures

* cost: forward/backward passes per map and the median wall time per frame at batch 1 and at ``latency_batch``
  (timed once per network architecture: latency does not depend on the weights, and all students share one);
* agreement with the reference, the teacher's perturbation map (Greydanus et al. 2018) of the run: Spearman and
  Pearson correlation, IoU of the top-k % pixels, ROC AUC of predicting the reference's top-k % pixels;
* localisation on the ground-truth target cells (where the environment gives them): mass inside, pointing game;
* faithfulness: area under the deletion and insertion curves of the agent's action probability (Petsiuk et al. 2018;
  :mod:`digr.faithfulness`), replacement = blurred frame;
* the sanity check (Adebayo et al. 2018): Spearman correlation with the same method on a weight-randomised copy;
* complexity: Gini index of the map.

Results go to ``{run}/saliency_bench/``: ``results.json``, ``table.md``, ``quality_vs_cost.png`` and ``section.md``
(included in the run's ``report.md``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch as th

from digr.config import ExperimentConfig
from digr.dataset import load_dataset
from digr.evaluate import batched, time_per_map
from digr.faithfulness import deletion_curve, insertion_curve, randomize_weights, sanity_check
from digr.metrics import gini, mass_inside, nanmean_ci, pearson, pointing_game, spearman, topk_auc, topk_iou
from digr.policies import greedy_action, load_student
from digr.saliency import SaliencyMethod, make_method
from digr.teacher import load_teacher

__all__ = ["build_methods", "run_saliency_bench", "bench_table", "plot_quality_vs_cost", "METRIC_COLUMNS"]

SAMPLING = ("smoothgrad", "smoothgrad_sq", "vargrad", "adaptgrad", "mollify_box", "mollify_laplace", "mollify_bump")

# (key in results, column title, format)
METRIC_COLUMNS = [
    ("spearman", "Spearman ρ ↑", "{:.3f}"),
    ("iou", "IoU top-k ↑", "{:.3f}"),
    ("auc", "AUC top-k ↑", "{:.3f}"),
    ("mass_inside", "mass in target ↑", "{:.3f}"),
    ("pointing_game", "pointing ↑", "{:.3f}"),
    ("deletion_auc", "deletion AUC ↓", "{:.3f}"),
    ("insertion_auc", "insertion AUC ↑", "{:.3f}"),
    ("sanity_rho", "sanity ρ ↓", "{:.3f}"),
    ("gini", "Gini", "{:.3f}"),
]


def build_methods(cfg: ExperimentConfig) -> dict[str, SaliencyMethod]:
    """The configured methods, labelled (e.g. ``smoothgrad-50``), with the run's perturbation parameters.

    :raises ValueError: an unknown method name (the config loader already rejects those).
    """
    sb, p = cfg.saliency_bench, cfg.perturbation
    out = {}
    for name in sb.methods:
        if name in SAMPLING:
            kw = dict(n_samples=sb.n_samples, seed=cfg.seed)
            if name == "adaptgrad":
                kw["confidence"] = sb.confidence
            else:
                kw["noise_level"] = sb.noise_level
            out[f"{name}-{sb.n_samples}"] = make_method(name, **kw)
        elif name == "integrated_gradients":
            out[f"integrated_gradients-{sb.ig_steps} ({sb.ig_baseline})"] = make_method(name, n_steps=sb.ig_steps, baseline=sb.ig_baseline)
        elif name == "occlusion":
            out[f"occlusion {sb.occlusion_window}px/{sb.occlusion_stride}"] = make_method(name, window=sb.occlusion_window,
                                                                                          stride=sb.occlusion_stride)
        elif name == "perturbation":
            out[f"perturbation (stride {p.stride})"] = make_method(name, sigma_mask=p.sigma_mask, sigma_blur=p.sigma_blur, stride=p.stride,
                                                                   internal_batch_size=p.internal_batch_size)
        else:
            out[name] = make_method(name)
    return out


def _summary(values) -> dict:
    m, ci, n = nanmean_ci(values)
    return {"mean": m, "ci95": ci, "n": n}


def run_saliency_bench(cfg: ExperimentConfig, device: str = "cpu", log: Callable[[str], None] = print,
                       progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the benchmark on the run folder of ``cfg`` and write its outputs; returns the results dict.

    :raises FileNotFoundError: the run has no teacher, students, held-out dataset or teacher maps yet (run
        ``digr run`` first).
    """
    path = cfg.run_path
    sb, top = cfg.saliency_bench, cfg.evaluate.top_percent
    teacher_file = path / "teacher" / "teacher.safetensors"
    if not teacher_file.is_file():
        raise FileNotFoundError(f"no trained teacher in {path}; run `digr run` (or `digr teacher`) on this config first")
    students = {}
    for s in cfg.distill.students:
        f = path / "students" / f"{s.name}.safetensors"
        if not f.is_file():
            raise FileNotFoundError(f"student {s.name!r} is not trained in {path}; run `digr distill` on this config first")
        students[s.name] = load_student(f, device)
    ref_file = path / "teacher_saliency_heldout.npy"
    if not ref_file.is_file():
        raise FileNotFoundError(f"no teacher perturbation maps in {path}; run `digr distill` (stage 'saliency') first")
    agents = {"teacher": load_teacher(teacher_file, device), **students}
    held = load_dataset(path / "dataset_heldout.npz")
    n = min(sb.frames, len(held))
    idx = np.linspace(0, len(held) - 1, n).round().astype(int)
    image = th.as_tensor(held.images[idx], device=device).float() / 255.0
    side = None if held.side is None else th.as_tensor(held.side[idx], device=device)
    ref = th.as_tensor(np.load(ref_file)[idx])
    target = held.target_mask[idx] if held.target_mask[idx].any() else None
    methods = build_methods(cfg)
    shape = tuple(image.shape[1:])
    results = {"frames": n, "top_percent": top, "threads": th.get_num_threads(), "latency_batch": sb.latency_batch,
               "reference": f"teacher perturbation (stride {cfg.perturbation.stride})", "rows": []}
    latency_cache: dict[tuple[str, str], dict] = {}
    total = len(agents) * len(methods)
    done = 0
    for agent_name, policy in agents.items():
        arch = "teacher" if agent_name == "teacher" else "student"
        action = greedy_action(policy, image, side)
        randomized = randomize_weights(policy, seed=cfg.seed)
        for label, method in methods.items():
            t0 = time.perf_counter()
            maps = batched(lambda x, s, a, m=method: m(policy, x, a, s), image, side, 32, action).detach().cpu()
            compute_s = time.perf_counter() - t0
            row = {"agent": agent_name, "method": label, "cost": str(method.cost(shape)), "forward": method.cost(shape).forward,
                   "backward": method.cost(shape).backward, "bench_compute_s": compute_s}
            row["spearman"] = _summary(spearman(maps, ref))
            row["pearson"] = _summary(pearson(maps, ref))
            row["iou"] = _summary(topk_iou(maps, ref, top))
            row["auc"] = _summary(topk_auc(maps, ref, top))
            if target is not None:
                row["mass_inside"] = _summary(mass_inside(maps.clamp_min(0), target))
                row["pointing_game"] = _summary(pointing_game(maps, target))
            rank_map = maps.abs()
            row["deletion_auc"] = _summary(deletion_curve(policy, image, rank_map, action, side, n_steps=sb.deletion_steps).prob_auc)
            row["insertion_auc"] = _summary(insertion_curve(policy, image, rank_map, action, side, n_steps=sb.deletion_steps).prob_auc)
            k = min(sb.sanity_frames, n)
            row["sanity_rho"] = _summary(sanity_check(lambda p, x, a, s, m=method: m(p, x, a, s), policy, image[:k], action[:k],
                                                      None if side is None else side[:k], randomized=randomized))
            row["gini"] = _summary(gini(maps))
            key = (arch, label)
            if key not in latency_cache:
                lat = {}
                for b in sorted({1, sb.latency_batch}):
                    t = time_per_map(lambda x, s, m=method: m(policy, x, greedy_action(policy, x, s), s), image, side, b, sb.latency_repeats)
                    lat[str(b)] = t["ms_per_frame"]
                latency_cache[key] = lat
            row["ms_per_frame"] = latency_cache[key]
            results["rows"].append(row)
            done += 1
            log(f"saliency-bench: {agent_name:>8s} {label:<34s} ρ={row['spearman']['mean']:.3f} "
                f"{row['ms_per_frame'][str(sb.latency_batch)]:.2f} ms/frame (batch {sb.latency_batch})")
            if progress:
                progress(f"{agent_name}: {label}", done, total)
    out = path / "saliency_bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = bench_table(results)
    (out / "table.md").write_text(table + "\n")
    plot_quality_vs_cost(results, out / "quality_vs_cost.png")
    (out / "section.md").write_text(_section(results, table))
    return results


def _cell(entry) -> str:
    return "–" if entry is None or not np.isfinite(entry["mean"]) else f"{entry['mean']:.3f}"


def bench_table(results: dict) -> str:
    """The markdown table of :func:`run_saliency_bench` results: one row per (agent, method)."""
    b = results["latency_batch"]
    top = results["top_percent"]
    head = ["agent", "method", "passes / map", "ms/frame (b=1)", f"ms/frame (b={b})"] + [t.replace("top-k", f"top-{top:g}%") for _, t, _ in METRIC_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        cells = [r["agent"], r["method"], r["cost"], f"{r['ms_per_frame']['1']:.2f}", f"{r['ms_per_frame'][str(b)]:.3f}"]
        cells += [_cell(r.get(k)) for k, _, _ in METRIC_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_quality_vs_cost(results: dict, out_png: Path) -> None:
    """Scatter of agreement (Spearman ρ with the reference) against ms per frame at the latency batch (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = str(results["latency_batch"])
    agents = list(dict.fromkeys(r["agent"] for r in results["rows"]))
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    markers = "osD^v<>pP*Xh8"
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for i, agent in enumerate(agents):
        for r in (r for r in results["rows"] if r["agent"] == agent):
            j = methods.index(r["method"])
            ax.scatter(r["ms_per_frame"][b], r["spearman"]["mean"], color=f"C{i}", marker=markers[j % len(markers)], s=45,
                       label=agent if j == 0 else None)
    for j, m in enumerate(methods):
        ax.scatter([], [], color="grey", marker=markers[j % len(markers)], label=m)
    ax.set_xscale("log")
    ax.set_xlabel(f"time per map, ms/frame at batch {b} (log)")
    ax.set_ylabel(f"Spearman ρ with {results['reference']}")
    ax.set_title("Saliency quality vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _section(results: dict, table: str) -> str:
    return "\n".join([
        "## Saliency methods: quality vs cost (`digr saliency-bench`)", "",
        f"{results['frames']} held-out frames; each agent explains its own greedy action; reference = {results['reference']}. "
        f"Latency: median per frame, {results['threads']} CPU threads. Deletion/insertion: area under the agent's action "
        "probability as pixels are replaced by the blurred frame in saliency order. Sanity ρ: Spearman correlation with the "
        "same method on a weight-randomised copy (lower = the map depends on the weights). The teacher's perturbation row is "
        "the reference itself.", "", table, "", "![Saliency quality vs cost](saliency_bench/quality_vs_cost.png)", "",
        "*Agreement with the teacher's perturbation map against time per map.*", ""])
