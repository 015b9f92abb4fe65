"""``digr summarize``: the over-seeds tables of a sweep as markdown, JSON and a figure.

Reads :class:`digr.evaluation.aggregate.VariantSummary` objects (rliable IQM, stratified-bootstrap CIs, probability of
improvement; Agarwal et al. 2021) and writes ``summary.md``, ``summary.json`` and ``summary_returns.png``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from digr.checkpoint import write_bytes_atomic
from digr.evaluation.aggregate import Estimate, VariantSummary, lower_is_better
from digr.report.style import AGENT_COLORS, figure

__all__ = ["summary_markdown", "write_summary"]


def _cell(e: Estimate | None) -> str:
    if e is None:
        return "–"
    digits = 1 if max(abs(e.iqm), abs(e.lo), abs(e.hi)) >= 10 else 3
    return f"{e.iqm:.{digits}f} [{e.lo:.{digits}f}, {e.hi:.{digits}f}]"


def _table(rows: dict[str, dict[str, Estimate]], metrics: list[str]) -> list[str]:
    agents: list[str] = []
    for metric in metrics:
        agents += [a for a in rows[metric] if a not in agents]
    lines = ["| metric | " + " | ".join(agents) + " |", "|---" * (len(agents) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(_cell(rows[m].get(a)) for a in agents) + " |" for m in metrics]
    return lines


def summary_markdown(summaries: list[VariantSummary], ci: float = 0.95) -> str:
    """The summary as markdown: per variant, a table of returns (and success rate, action agreement, attack cells), a
    table of saliency metrics (rows) by map (columns), and P(X > Y) per metric. Cells: ``IQM [lo, hi]``."""
    pct = f"{100 * ci:g} %"
    out = [
        "# Summary over seeds",
        "",
        f"Interquartile mean (IQM) over runs with {pct} stratified-bootstrap confidence intervals, and probability of "
        "improvement P(X > Y), both from rliable (Agarwal et al. 2021). One score per run (seed): e.g. its mean greedy "
        "return over its evaluation episodes. With fewer than 5 runs an IQM is close to the mean and the intervals are "
        "wide or, for one run, empty of meaning.",
    ]
    for s in summaries:
        out += ["", f"## {s.label}", "", f"{len(s.runs)} runs, seeds {', '.join(map(str, s.seeds))}: "
                + ", ".join(f"`{p}`" for p in s.runs), ""]  # fmt: skip
        agent_metrics = [m for m in s.estimates if not m.startswith("saliency ")]
        map_metrics = [m for m in s.estimates if m.startswith("saliency ")]
        if agent_metrics:
            out += [*_table(s.estimates, agent_metrics), ""]
        if map_metrics:
            out += ["Saliency on held-out frames (columns: maps).", "", *_table(s.estimates, map_metrics), ""]
        imps = [(m, i) for m, row in s.improvements.items() for i in row if min(i.n_x, i.n_y) >= 2]
        if imps:
            out += ["| metric | X | Y | P(X > Y) | runs X / Y |", "|---|---|---|---|---|"]
            out += [f"| {m}{' (lower is better: P(X < Y))' if lower_is_better(m) else ''} | {i.x} | {i.y} | "
                    f"{i.p:.2f} [{i.lo:.2f}, {i.hi:.2f}] | {i.n_x} / {i.n_y} |" for m, i in imps]  # fmt: skip
            out.append("")
        elif s.improvements:
            out += ["P(X > Y) is left out: it needs at least 2 runs (seeds) of each agent.", ""]
    return "\n".join(out).rstrip() + "\n"


def _plot_returns(path: Path, summaries: list[VariantSummary]) -> None:
    rows = [(s.label, a, e) for s in summaries for a, e in s.estimates.get("return", {}).items()]
    if not rows:
        return
    with figure(path, 5.5, 0.3 * len(rows) + 0.8) as (_, axes):
        ax = axes[0, 0]
        for y, (_, agent, e) in enumerate(rows):
            color = AGENT_COLORS.get(agent, "C4")
            ax.plot([e.lo, e.hi], [y, y], color=color, lw=4, alpha=0.5, solid_capstyle="butt")
            ax.plot([e.iqm], [y], "|", color=color, ms=12, mew=2)
        ax.set_yticks(range(len(rows)), [f"{a} ({lab})" if len(summaries) > 1 else a for lab, a, _ in rows])
        ax.invert_yaxis()
        ax.set_xlabel("return: IQM over runs and 95 % CI")


def write_summary(out_dir: str | Path, summaries: list[VariantSummary], ci: float = 0.95) -> Path:
    """Write ``summary.md``, ``summary.json`` (every estimate with its per-run scores, every P(X better than Y), and
    ``lower_is_better``: the metrics whose P is P(X < Y)) and
    ``summary_returns.png`` to ``out_dir`` (created); returns the path of ``summary.md``. Files are replaced
    atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "summary.md"
    write_bytes_atomic(md, summary_markdown(summaries, ci).encode())
    data = [
        {
            "label": s.label,
            "runs": [str(p) for p in s.runs],
            "seeds": s.seeds,
            "estimates": {m: {a: asdict(e) for a, e in row.items()} for m, row in s.estimates.items()},
            "improvements": {m: [asdict(i) for i in imps] for m, imps in s.improvements.items()},
            "lower_is_better": sorted(m for m in {*s.estimates, *s.improvements} if lower_is_better(m)),
        }
        for s in summaries
    ]
    write_bytes_atomic(out / "summary.json", json.dumps({"ci": ci, "variants": data}, indent=1).encode())
    _plot_returns(out / "summary_returns.png", summaries)
    return md
