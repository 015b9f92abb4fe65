"""Rendering of benchmark results: the saliency-bench table and report section
(:func:`digr.evaluation.saliency_bench.bench_methods`) and the latency table of ``digr bench saliency``
(:func:`digr.evaluation.latency.bench_latency`)."""

from __future__ import annotations

import numpy as np

__all__ = ["METRIC_COLUMNS", "bench_section", "bench_table", "latency_table"]

#: Columns of the saliency-bench table: (key in a result row, column title, format).
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


def _cell(entry) -> str:
    return "–" if entry is None or not np.isfinite(entry["mean"]) else f"{entry['mean']:.3f}"


def bench_table(results: dict) -> str:
    """The markdown table of saliency-bench results (:func:`digr.evaluation.saliency_bench.bench_methods`): one row per
    (agent, method)."""
    b = results["latency_batch"]
    top = results["top_percent"]
    head = ["agent", "method", "passes / map", "ms/frame (b=1)", f"ms/frame (b={b})"] + [
        t.replace("top-k", f"top-{top:g}%") for _, t, _ in METRIC_COLUMNS
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        cells = [r["agent"], r["method"], r["cost"], f"{r['ms_per_frame']['1']:.2f}", f"{r['ms_per_frame'][str(b)]:.3f}"]
        cells += [_cell(r.get(k)) for k, _, _ in METRIC_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_section(results: dict, figure_link: str) -> str:
    """The run report's section on saliency methods, from ``saliency_bench/results.json`` content and the link of the
    quality-vs-cost figure."""
    return "\n".join(
        [
            "## Saliency methods: quality vs cost (`digr saliency-bench`)",
            "",
            f"{results['frames']} held-out frames; each agent explains its own greedy action; "
            f"reference = {results['reference']}. Latency: median per frame, {results['threads']} CPU threads. "
            "Deletion/insertion: area under the agent's action probability as pixels are replaced by the blurred frame in "
            "saliency order. Sanity ρ: Spearman correlation with the same method on a weight-randomised copy (lower = the map "
            "depends on the weights). The teacher's perturbation row is the reference itself.",
            "",
            bench_table(results),
            "",
            f"![Saliency quality vs cost]({figure_link})",
            "",
            "*Agreement with the teacher's perturbation map against time per map.*",
            "",
        ]
    )


def latency_table(rows: list[dict], source: str) -> str:
    """Markdown table of ``digr bench saliency`` rows (thread count, map, batch, ms per frame, passes, achieved and plain
    forward passes per second), followed by the perturbation / gradient ratio at each thread count and batch size."""
    lines = [
        f"Saliency latency ({source})",
        "",
        "| threads | map | batch | ms / frame | forward passes | achieved fwd/s | plain batched fwd/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fwd = f"{r['forward_passes_per_s']:.0f}" if "forward_passes_per_s" in r else ""
        plain = f"{r['plain_forward_passes_per_s']:.0f}" if "plain_forward_passes_per_s" in r else ""
        lines.append(
            f"| {r['threads']} | {r['map']} | {r['batch']} | {r['ms_per_frame']:.3f} | {r['passes']} | {fwd} | {plain} |"
        )
    lines.append("")
    for n in dict.fromkeys(r["threads"] for r in rows):
        for b in sorted({r["batch"] for r in rows}):
            g, q = [r["ms_per_frame"] for r in rows if r["batch"] == b and r["threads"] == n]
            lines.append(f"{n} thread(s), batch {b}: perturbation / gradient = {q / g:.0f}x")
    return "\n".join(lines) + "\n"
