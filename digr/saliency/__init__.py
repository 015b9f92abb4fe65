"""Saliency maps behind one interface: ``method(policy, image[B,C,H,W], action[B], side=None) -> saliency[B,H,W]``.

* :func:`gradient_saliency`: vanilla input gradient (Simonyan et al. 2013), one forward + one backward pass; the
  student's deployment saliency in DIGR.
* :func:`perturbation_saliency`: Greydanus et al. 2018 blur-perturbation saliency, batched.
"""

from digr.saliency.gradient import TARGETS, gradient_saliency, input_gradient, target_score
from digr.saliency.perturbation import gaussian_blur, gaussian_masks, perturbation_saliency

__all__ = ["TARGETS", "gradient_saliency", "input_gradient", "target_score", "gaussian_blur", "gaussian_masks", "perturbation_saliency"]
