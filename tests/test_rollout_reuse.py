"""Closed-loop returns are reused only under the same weights, protocol and version (digr.evaluation.rollout_reuse)."""

from digr.evaluation.rollout_reuse import reusable_rollouts, rollout_fingerprints

_BASE = {"env": {"id": "x"}, "episodes": 30, "seed": 7, "deterministic": True}
PROTOCOLS = {"rollout": _BASE | {"env_kwargs": {"p": 0.25}}, "rollout_compare": _BASE | {"env_kwargs": {}}}
WEIGHTS = {"teacher": "aa", "plain": "bb", "digr": "cc"}


def _metrics(prints):
    summary = lambda r: {"return_mean": r, "episodes": 30}
    return {"teacher": {"rollout": summary(1.0), "rollout_compare": summary(2.0)},
            "students": {"plain": {"rollout": summary(3.0), "rollout_compare": summary(4.0)},
                         "digr": {"rollout": summary(5.0), "rollout_compare": summary(6.0)}},
            "rollout_fingerprints": prints}  # fmt: skip


def test_fingerprints_change_with_weights_protocol_and_version_only():
    base = rollout_fingerprints(WEIGHTS, PROTOCOLS, "0.1.0")
    assert base == rollout_fingerprints(dict(reversed(WEIGHTS.items())), PROTOCOLS, "0.1.0")  # order does not matter
    assert base["plain"]["rollout"] != base["plain"]["rollout_compare"] != base["digr"]["rollout_compare"]
    retrained = rollout_fingerprints(WEIGHTS | {"digr": "dd"}, PROTOCOLS, "0.1.0")
    assert retrained["digr"] != base["digr"] and retrained["plain"] == base["plain"]
    sticky = PROTOCOLS | {"rollout": PROTOCOLS["rollout"] | {"env_kwargs": {"p": 0.0}}}
    changed = rollout_fingerprints(WEIGHTS, sticky, "0.1.0")
    assert all(changed[a]["rollout"] != base[a]["rollout"] and changed[a]["rollout_compare"] == base[a]["rollout_compare"]
               for a in WEIGHTS)  # fmt: skip
    assert rollout_fingerprints(WEIGHTS, PROTOCOLS, "0.2.0")["teacher"] != base["teacher"]


def test_only_summaries_measured_under_the_current_fingerprint_are_reused():
    old = rollout_fingerprints(WEIGHTS, PROTOCOLS, "0.1.0")
    now = rollout_fingerprints(WEIGHTS | {"digr": "dd", "rs": "ee"}, PROTOCOLS, "0.1.0")  # digr retrained, rs added
    reuse = reusable_rollouts(_metrics(old), now)
    assert set(reuse) == {("teacher", "rollout"), ("teacher", "rollout_compare"), ("plain", "rollout"),
                          ("plain", "rollout_compare")}  # fmt: skip
    assert reuse["plain", "rollout_compare"]["return_mean"] == 4.0 and reuse["teacher", "rollout"]["return_mean"] == 1.0
    no_prints = _metrics(old)
    del no_prints["rollout_fingerprints"]  # a metrics.json from before fingerprints were recorded: nothing is reused
    assert reusable_rollouts(no_prints, now) == {} and reusable_rollouts(None, now) == {}
    missing = _metrics(old)
    del missing["students"]["plain"]["rollout_compare"]  # a fingerprint without its summary is not trusted
    assert ("plain", "rollout_compare") not in reusable_rollouts(missing, old)
