"""Presentation: markdown and figures rendered from the JSON-safe rows the computation modules return.

:mod:`.run` (the run's ``report.md``), :mod:`.attack` (attack table and section), :mod:`.bench` (saliency-bench and
latency tables), :mod:`.figures` (every figure), all in the one style of :mod:`.style`. Importing this package changes
no global state (no pyplot, no matplotlib backend switch).
"""
