"""Evaluation: returns (:mod:`.returns`), saliency maps and their quality (:mod:`.maps`, :mod:`.metrics`,
:mod:`.faithfulness`), the metrics of a run (:mod:`.run_metrics`), robustness under attack (:mod:`.robustness`,
:mod:`.attack_cells`), and benchmarks (:mod:`.latency`, :mod:`.saliency_bench`).

Every function here computes and returns plain, JSON-safe rows; :mod:`digr.report` renders them. Every environment
step goes through the rollout engine (:mod:`digr.rollout`).
"""
