"""Evaluation: returns (:mod:`.returns`), saliency maps and their quality (:mod:`.maps`, :mod:`.metrics`,
:mod:`.faithfulness`), the metrics of a run (:mod:`.run_metrics`), robustness under attack (:mod:`.robustness`,
:mod:`.attack_cells`), and benchmarks (:mod:`.latency`, :mod:`.saliency_bench`).

The functions here compute; they return numbers, arrays and JSON-safe dicts (run metrics, attack rows, bench results),
never markdown or figures: :mod:`digr.report` renders those. Every environment step goes through the rollout engine
(:mod:`digr.rollout`).
"""
