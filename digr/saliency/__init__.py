"""Saliency maps behind one interface (see :mod:`digr.saliency.base`):
``method(policy, image[B,C,H,W], action[B], side=None) -> saliency[B,H,W]`` and ``method.attribute(...)`` for the raw
per-channel attribution.

=====================  ==========================================================  ==================================
name                   method                                                      source
=====================  ==========================================================  ==================================
gradient               vanilla input gradient (DIGR's one-pass student map)        Simonyan et al. 2013
grad_x_input           gradient × input                                            Shrikumar et al. 2016
integrated_gradients   path integral of gradients from a baseline                   Sundararajan et al. 2017
smoothgrad             mean gradient over Gaussian noise                            Smilkov et al. 2017
smoothgrad_sq          mean squared gradient over Gaussian noise                    Smilkov et al. 2017
vargrad                variance of the gradient over Gaussian noise                 Adebayo et al. 2018
adaptgrad              per-pixel σ from the distance to the input bounds            Zhou et al. 2025
mollify_box/laplace/   gradient mollified with other kernels (our instantiation)    Zhou et al. 2024 (framework)
  mollify_bump
perturbation           blur-perturbation saliency, batched                          Greydanus et al. 2018
occlusion              constant-patch occlusion, batched                            Zeiler & Fergus 2014
attention              an attention student's own map, from its forward pass       Yang et al. 2018; Nikulin et al. 2019
attention_gradient     (∂ max attention / ∂x)², rl-attention's rendering            rl-attention (Nikulin et al. 2019)
=====================  ==========================================================  ==================================
"""

import functools

from digr.saliency.attention import AttentionGradient, AttentionMap
from digr.saliency.base import REDUCTIONS, Cost, SaliencyMethod, reduce_channels
from digr.saliency.gradient import (
    TARGETS,
    GradientXInput,
    VanillaGradient,
    act_and_explain,
    batched_input_gradient,
    gradient_saliency,
    input_gradient,
    target_score,
)
from digr.saliency.integrated_gradients import IntegratedGradients
from digr.saliency.occlusion import Occlusion
from digr.saliency.perturbation import PerturbationSaliency, gaussian_blur, gaussian_masks, perturbation_saliency
from digr.saliency.smoothing import (
    AdaptGrad,
    Mollified,
    Smoothed,
    SmoothGrad,
    SmoothGradSq,
    VarGrad,
    adaptive_sigma,
    sample_kernel,
)

__all__ = [
    "METHODS",
    "REDUCTIONS",
    "SAMPLING_METHODS",
    "TARGETS",
    "AdaptGrad",
    "AttentionGradient",
    "AttentionMap",
    "Cost",
    "GradientXInput",
    "IntegratedGradients",
    "Mollified",
    "Occlusion",
    "PerturbationSaliency",
    "SaliencyMethod",
    "SmoothGrad",
    "SmoothGradSq",
    "Smoothed",
    "VanillaGradient",
    "VarGrad",
    "act_and_explain",
    "adaptive_sigma",
    "batched_input_gradient",
    "gaussian_blur",
    "gaussian_masks",
    "gradient_saliency",
    "input_gradient",
    "make_method",
    "perturbation_saliency",
    "reduce_channels",
    "sample_kernel",
    "target_score",
]

METHODS = {
    "gradient": VanillaGradient,
    "grad_x_input": GradientXInput,
    "integrated_gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "smoothgrad_sq": SmoothGradSq,
    "vargrad": VarGrad,
    "adaptgrad": AdaptGrad,
    "mollify_box": functools.partial(Mollified, kernel="box"),
    "mollify_laplace": functools.partial(Mollified, kernel="laplace"),
    "mollify_bump": functools.partial(Mollified, kernel="bump"),
    "occlusion": Occlusion,
    "perturbation": PerturbationSaliency,
    "attention": AttentionMap,
    "attention_gradient": AttentionGradient,
}


#: The methods of :data:`METHODS` that average gradients over ``n_samples`` noisy copies (SmoothGrad and its kin).
SAMPLING_METHODS = tuple(name for name, factory in METHODS.items() if issubclass(getattr(factory, "func", factory), Smoothed))


def make_method(name: str, **kwargs) -> SaliencyMethod:
    """Build the saliency method ``name`` (a key of :data:`METHODS`) with its keyword arguments.

    :raises ValueError: unknown name (the message lists the known ones) or bad arguments.
    """
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, list(METHODS), n=1)
        raise ValueError(
            f"unknown saliency method {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; known: {sorted(METHODS)}"
        )
    try:
        return METHODS[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"saliency method {name!r}: bad arguments {kwargs}: {e}") from e
