"""DIGR: policy distillation with selective input-gradient regularisation for real-time, robust RL saliency.

A reconstruction of Xing et al., "Policy Distillation with Selective Input Gradient Regularization for Efficient
Interpretability" (arXiv 2205.08685). The paper's full text and code are not public; see README.md ("What is a
reconstruction") for which parts are ours.
"""

__version__ = "0.1.0"
