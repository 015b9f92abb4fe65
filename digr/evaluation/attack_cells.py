"""Which attack cells of earlier ``digr attack`` calls a new call may reuse, and how the table is merged. Pure functions
on rows (no files): :mod:`digr.running.pipeline` reads and writes them.

A *cell* is one row of :func:`digr.evaluation.robustness.robustness_sweep`, keyed by ``(agent, attack, eps)``; each
row also records its *protocol* (:func:`attack_protocol`: episodes, open-loop frames, seed, batching and the SHA-256
of the agent's weights) and its ``attack_config`` (the attack's own settings). A cell is reused only under the same
protocol (here) and attack config (checked by the sweep). Rules:

* cells come from the last finished call (``results.json``) and from an interrupted call (``partial.json``); for the
  same key the interrupted call's cell is the newer one and wins;
* a file holding any cell of another protocol (a retrained agent, other episodes) is *stale*: its cells leave the
  table, and the caller sets the file aside (never deletes it);
* earlier cells this call does not ask for stay in the table; rows are ordered by agent (teacher first, then the
  students in config order), attack (earlier attacks first, then this call's), then ε.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CellPlan", "attack_protocol", "cell_key", "count_reused", "eps_label", "merge_cells", "plan_cells"]


def cell_key(row: dict) -> tuple:
    """``(agent, attack, eps)`` of a row."""
    return row.get("agent"), row.get("attack"), row.get("eps")


def eps_label(row: dict) -> str:
    """The ε of a row as the table shows it (``"1/255"``): its ``eps_label``, or for a row written before rows
    carried one, :func:`digr.attacks.format_eps` of its ``eps`` (observation units). :raises KeyError: neither."""
    from digr.attacks import format_eps

    return row.get("eps_label") or format_eps(row["eps"])


def attack_protocol(
    weights_sha256: dict[str, str],
    episodes: int,
    open_loop_frames: int,
    seed: int,
    n_parallel: int,
    batch_size: int,
    env_kwargs: dict | None = None,
) -> dict[str, dict]:
    """Per agent, the protocol its cells are measured under: ``{agent: {"episodes", "open_loop_frames", "seed",
    "n_parallel", "batch_size", "weights_sha256"}}``, plus ``"env_kwargs"`` when the evaluation protocol overrides the
    env's kwargs (e.g. sticky actions; cells measured without them are not reused).

    :param weights_sha256: agent name → SHA-256 (hex) of its weights file.
    """
    extra = {"env_kwargs": dict(env_kwargs)} if env_kwargs else {}  # empty: the protocol of cells made before the field
    return {
        name: {
            "episodes": episodes,
            "open_loop_frames": open_loop_frames,
            "seed": seed,
            "n_parallel": n_parallel,
            "batch_size": batch_size,
            "weights_sha256": sha,
            **extra,
        }
        for name, sha in weights_sha256.items()
    }


@dataclass(frozen=True)
class CellPlan:
    """What :func:`plan_cells` decided.

    :ivar reusable: earlier cells measured under this call's protocol, one per key (the interrupted call's wins).
    :ivar stale_results: ``results.json`` holds a cell of another protocol: set the file aside.
    :ivar stale_partial: ``partial.json`` holds a cell of another protocol: set the file aside.
    """

    reusable: list[dict]
    stale_results: bool
    stale_partial: bool


def plan_cells(results_rows: Sequence[dict], partial_rows: Sequence[dict], protocol: dict[str, dict]) -> CellPlan:
    """Sort earlier cells into reusable and stale (module docstring).

    :param results_rows: rows of the last finished call. :param partial_rows: rows of an interrupted call.
    :param protocol: this call's :func:`attack_protocol`.
    """

    def same(r: dict) -> bool:
        return r.get("agent") in protocol and r.get("protocol") == protocol[r["agent"]]

    reusable = list({cell_key(r): r for r in [*results_rows, *partial_rows] if same(r)}.values())
    return CellPlan(reusable, any(not same(r) for r in results_rows), any(not same(r) for r in partial_rows))


def count_reused(rows: Sequence[dict], reusable: Sequence[dict]) -> int:
    """How many of a sweep's ``rows`` it took from ``reusable`` (the sweep hands back the very row object it reused)."""
    earlier = {id(r) for r in reusable}
    return sum(id(r) in earlier for r in rows)


def merge_cells(
    reusable: Sequence[dict], rows: Sequence[dict], attacks: Sequence[str], eps: Sequence, agent_order: Sequence[str]
) -> tuple[list[dict], list[str], list[str]]:
    """The table after a call: this call's ``rows`` plus the reusable earlier cells it did not ask for.

    :param attacks, eps: what this call asked for (ε as given: numbers or strings such as ``"1/255"``).
    :param agent_order: agent names in table order (``["teacher", *students]``); others go last.
    :returns: ``(rows, attacks, eps labels)``: the merged rows in table order, and the attack names and ε labels the
        table covers (earlier cells' first).
    """
    new_keys = {cell_key(r) for r in rows}
    kept = [r for r in reusable if cell_key(r) not in new_keys]
    attacks, eps_labels = list(attacks), [str(e) for e in eps]
    if not kept:
        return list(rows), attacks, eps_labels
    attacks = list(dict.fromkeys([r["attack"] for r in kept] + attacks))
    eps_labels = list(dict.fromkeys([eps_label(r) for r in kept] + eps_labels))
    order = list(agent_order)

    def position(r: dict) -> tuple:
        agent = order.index(r["agent"]) if r["agent"] in order else len(order)
        return agent, attacks.index(r["attack"]) if r["attack"] in attacks else len(attacks), r["eps"]

    return sorted([*kept, *rows], key=position), attacks, eps_labels
