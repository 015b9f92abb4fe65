"""Rendering of attack results (rows of :func:`digr.evaluation.robustness.robustness_sweep`): the markdown table and the
run report's section."""

from __future__ import annotations

from collections.abc import Sequence

from digr.evaluation.attack_cells import eps_label

__all__ = ["attack_section", "robustness_table"]


def _pm(mean, ci, fmt: str = "{:.3f}") -> str:
    if mean is None:
        return "n/a"
    return fmt.format(mean) + ("" if ci is None else " ± " + fmt.format(ci))


def robustness_table(rows: Sequence[dict]) -> str:
    """Markdown table of attack rows (:func:`digr.evaluation.robustness.robustness_sweep`, or ``results["rows"]``).

    Columns: agent, attack, ε (/255), closed-loop return (mean ± 95 % CI), success rate, closed-loop flip rate,
    open-loop flip rate and KL (mean ± CI). Missing parts show ``n/a``; skipped rows show the reason.
    :returns: the table as a string (header and one line per row, in the rows' order).
    """
    lines = [
        "| agent | attack | ε (/255) | return | success | flip rate (closed loop) | flip rate (open loop) | KL (open loop) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eps = eps_label(r)
        if r.get("skipped"):
            lines.append(f"| {r['agent']} | {r['attack']} | {eps} | skipped: {r['skipped']} | | | | |")
            continue
        cl, ol = r.get("closed_loop") or {}, r.get("open_loop") or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    str(r["agent"]),
                    str(r["attack"]),
                    eps,
                    _pm(cl.get("return_mean"), cl.get("return_ci95")),
                    _pm(cl.get("success_rate"), cl.get("success_ci95"), "{:.2f}"),
                    _pm(cl.get("flip_rate"), cl.get("flip_rate_ci95"), "{:.2f}"),
                    _pm(ol.get("flip_rate"), ol.get("flip_rate_ci95"), "{:.2f}"),
                    _pm(ol.get("kl_mean"), ol.get("kl_ci95"), "{:.3g}"),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def attack_section(results: dict, figure_link: str | None) -> str:
    """The run report's section on robustness, from ``attack/results.json`` content (``rows``, ``episodes``, ``seed``,
    ``open_loop_frames``) and the link of the return-vs-ε figure (None: no figure)."""
    return "\n".join(
        [
            "## Robustness to observation attacks (`digr attack`)",
            "",
            "ℓ∞ attacks on the image (side inputs untouched), ε in [0, 1] pixel units (k/255 = k uint8 levels); attacked "
            f"frames are rounded to uint8. Closed loop: {results['episodes']} full episodes per cell "
            f"(seeds {results['seed']}…), every observation attacked, greedy actions; ± = 95 % CI. Open loop: "
            f"{results['open_loop_frames']} held-out states, action-flip rate and KL(π(s) ‖ π(s')).",
            "",
            robustness_table(results["rows"]),
            "",
            *(
                [f"![Return vs ε]({figure_link})", "", "*Return under attack against the budget ε.*", ""]
                if figure_link
                else []
            ),
        ]
    )
