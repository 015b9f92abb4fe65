"""Attack-cell reuse and merging (digr/evaluation/attack_cells.py): pure functions on rows, no files, no attacks."""

from digr.evaluation.attack_cells import attack_protocol, cell_key, count_reused, eps_label, merge_cells, plan_cells

P = attack_protocol({"teacher": "t1", "plain": "p1", "digr": "d1"}, 10, 64, 100, 5, 32)


def cell(agent, attack, eps, protocol=None, value=0.0):
    label = "0" if eps == 0 else f"{eps * 255:g}/255"
    return {"agent": agent, "attack": attack, "eps": eps, "eps_label": label,
            "protocol": P[agent] if protocol is None else protocol, "closed_loop": {"return_mean": value}}  # fmt: skip


def test_protocol_names_every_field_per_agent():
    assert P["digr"] == {"episodes": 10, "open_loop_frames": 64, "seed": 100, "n_parallel": 5, "batch_size": 32,
                         "weights_sha256": "d1"}  # fmt: skip


def test_cells_of_the_same_protocol_are_reusable_and_an_interrupted_call_wins():
    finished = [cell("digr", "fgsm", 1 / 255, value=1.0), cell("plain", "fgsm", 1 / 255)]
    interrupted = [cell("digr", "fgsm", 1 / 255, value=2.0)]
    plan = plan_cells(finished, interrupted, P)
    assert not plan.stale_results and not plan.stale_partial
    assert {cell_key(r): r["closed_loop"]["return_mean"] for r in plan.reusable} == {
        ("digr", "fgsm", 1 / 255): 2.0,
        ("plain", "fgsm", 1 / 255): 0.0,
    }


def test_cells_of_other_weights_or_another_protocol_are_stale_and_not_reused():
    retrained = cell("digr", "fgsm", 1 / 255, protocol={**P["digr"], "weights_sha256": "d0"})
    more_episodes = cell("plain", "fgsm", 1 / 255, protocol={**P["plain"], "episodes": 30})
    unknown_agent = {**cell("teacher", "fgsm", 0.0), "agent": "removed_student"}
    plan = plan_cells([retrained, cell("teacher", "mad", 0.0)], [more_episodes, unknown_agent], P)
    assert plan.stale_results and plan.stale_partial
    assert [cell_key(r) for r in plan.reusable] == [("teacher", "mad", 0.0)]
    assert not plan_cells([], [], P).reusable


def test_merge_keeps_earlier_cells_the_call_did_not_ask_for_in_table_order():
    earlier = [cell("digr", "mad", 1 / 255), cell("teacher", "fgsm", 3 / 255), cell("digr", "fgsm", 1 / 255, value=9.0)]
    new = [cell("teacher", "fgsm", 1 / 255), cell("digr", "fgsm", 1 / 255, value=1.0), cell("plain", "fgsm", 1 / 255)]
    rows, attacks, eps = merge_cells(earlier, new, ["fgsm"], ["1/255"], ["teacher", "plain", "digr"])
    assert [cell_key(r) for r in rows] == [
        ("teacher", "fgsm", 1 / 255),
        ("teacher", "fgsm", 3 / 255),
        ("plain", "fgsm", 1 / 255),
        ("digr", "mad", 1 / 255),
        ("digr", "fgsm", 1 / 255),
    ]
    assert next(r for r in rows if cell_key(r) == ("digr", "fgsm", 1 / 255))["closed_loop"]["return_mean"] == 1.0  # new wins
    assert attacks == ["mad", "fgsm"] and eps == ["1/255", "3/255"]


def test_merge_without_earlier_cells_keeps_the_call_as_it_is():
    new = [cell("digr", "fgsm", 0.0), cell("teacher", "fgsm", 0.0)]
    rows, attacks, eps = merge_cells([], new, ["fgsm"], [0.0], ["teacher", "digr"])
    assert rows == new and attacks == ["fgsm"] and eps == ["0.0"]


def test_count_reused_counts_the_very_row_objects_the_sweep_took_over():
    earlier = [cell("digr", "fgsm", 1 / 255)]
    equal_but_new = dict(earlier[0])
    assert count_reused([earlier[0], cell("plain", "fgsm", 1 / 255)], earlier) == 1
    assert count_reused([equal_but_new], earlier) == 0


def test_a_cell_written_before_rows_carried_eps_label_still_merges_and_prints():
    from digr.report.attack import robustness_table

    old = cell("digr", "fgsm", 3 / 255)
    del old["eps_label"]
    rows, _, eps = merge_cells([old], [cell("digr", "pgd10", 1 / 255)], ["pgd10"], [1 / 255], ["teacher", "digr"])
    assert eps_label(old) == "3/255" and "3/255" in eps and len(rows) == 2
    assert "| digr | fgsm | 3/255 |" in robustness_table(rows)
