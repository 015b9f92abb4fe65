"""DIGR: policy distillation with selective input-gradient regularisation for real-time, robust RL saliency.

A reconstruction of Xing et al., "Policy Distillation with Selective Input Gradient Regularization for Efficient
Interpretability" (arXiv 2205.08685). The paper's full text and code are not public; see README.md ("What is a
reconstruction") for which parts are ours.

Where things are: :mod:`digr.contracts` (what a policy and an environment are), :mod:`digr.rollout` (the one rollout
engine), :mod:`digr.method` (loss, masks, distillation, DAgger), :mod:`digr.saliency`, :mod:`digr.attacks`,
:mod:`digr.policies`, :mod:`digr.evaluation`, :mod:`digr.report`, :mod:`digr.running` (config, run folder, pipeline)
and :mod:`digr.cli`; README.md, "Architecture", draws the data flow.
"""

__version__ = "0.1.0"
