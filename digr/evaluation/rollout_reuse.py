"""Reuse of closed-loop returns across evaluations of one run folder.

Adding a student to a finished run, or re-evaluating after a change that does not touch an agent, need not replay that
agent's episodes: its returns depend only on its weights and on the protocol (env config, protocol env kwargs, episode
count, seeds, greedy or sampled actions) and the DIGR version. :func:`rollout_fingerprints` hashes exactly those per
agent and protocol; ``metrics.json`` stores the hashes (``rollout_fingerprints``), and :func:`reusable_rollouts`
returns the summaries of an earlier ``metrics.json`` whose hash is the current one. Anything else is measured again.
On Breakout, 30 sticky-action games plus the no-op protocol cost minutes per agent, so adding four students to a
three-student run halves the evaluation.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["reusable_rollouts", "rollout_fingerprints"]


def rollout_fingerprints(weights_sha256: dict[str, str], protocols: dict[str, dict], version: str) -> dict[str, dict]:
    """Per agent and protocol, the SHA-256 (hex) of everything its closed-loop returns depend on.

    :param weights_sha256: agent name → SHA-256 (hex) of its weights file.
    :param protocols: protocol key (``"rollout"``, ``"rollout_compare"``) → JSON-safe dict of its settings (env config
        and kwargs, ``episodes``, ``seed``, ``deterministic``).
    :param version: the DIGR version (a new version measures again).
    :returns: ``{agent: {protocol key: hex digest}}``.
    :raises TypeError: a protocol setting is not JSON-serialisable.
    """

    def digest(sha: str, protocol: dict) -> str:
        text = json.dumps({"weights_sha256": sha, "protocol": protocol, "version": version}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    return {agent: {key: digest(sha, p) for key, p in protocols.items()} for agent, sha in weights_sha256.items()}


def reusable_rollouts(previous: dict | None, fingerprints: dict[str, dict]) -> dict[tuple[str, str], dict]:
    """The rollout summaries of an earlier ``metrics.json`` (``previous``, its parsed dict; None or {} when there is
    none) that were measured under the same fingerprint as now.

    :param fingerprints: :func:`rollout_fingerprints` of the current agents and protocols.
    :returns: ``{(agent, protocol key): summary}`` (summaries of :func:`digr.evaluation.returns.summarize_episodes`);
        empty when ``previous`` has no fingerprints (made before they were recorded) or nothing matches.
    """
    previous = previous or {}
    old, out = previous.get("rollout_fingerprints") or {}, {}
    for agent, keys in fingerprints.items():
        entry = previous.get("teacher") if agent == "teacher" else previous.get("students", {}).get(agent)
        for key, digest in keys.items():
            if old.get(agent, {}).get(key) == digest and isinstance(entry, dict) and key in entry:
                out[agent, key] = entry[key]
    return out
