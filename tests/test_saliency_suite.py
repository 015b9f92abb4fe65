"""The saliency suite: Captum equality where Captum has the method, known answers where it does not."""

import math

import pytest
import torch as th
from torch import nn

from digr.policies.nets import PolicyNet
from digr.saliency import (
    METHODS,
    AdaptGrad,
    GradientXInput,
    IntegratedGradients,
    Mollified,
    Occlusion,
    PerturbationSaliency,
    SmoothGrad,
    SmoothGradSq,
    VanillaGradient,
    VarGrad,
    adaptive_sigma,
    make_method,
    reduce_channels,
    sample_kernel,
)
from digr.saliency.integrated_gradients import quadrature


@pytest.fixture
def captum_attr():
    """Captum's attribution methods, the oracle of the tests that take this fixture (skipped without Captum)."""
    return pytest.importorskip("captum.attr")


class LinearPolicy(nn.Module):
    """logits = W·flatten(x) + b: every gradient of a logit is a row of W."""

    def __init__(self, shape=(2, 6, 6), n_actions=3):
        super().__init__()
        self.fc = nn.Linear(math.prod(shape), n_actions)

    def forward(self, image, side=None):
        return self.fc(image.flatten(1))


@pytest.fixture
def conv_policy():
    th.manual_seed(1)
    return PolicyNet((3, 16, 16), 4, cell=4, features_dim=32).eval()


@pytest.fixture
def frames():
    th.manual_seed(2)
    return th.rand(3, 3, 16, 16), th.tensor([0, 2, 3])


def _f(policy):
    return lambda x: policy(x, None)


def test_vanilla_and_grad_x_input_match_captum(captum_attr, conv_policy, frames):
    x, a = frames
    ours = VanillaGradient(target="logit").attribute(conv_policy, x, a)
    theirs = captum_attr.Saliency(_f(conv_policy)).attribute(x, target=a, abs=False)
    assert th.allclose(ours, theirs, atol=1e-7)
    ours = GradientXInput(target="logit").attribute(conv_policy, x, a)
    theirs = captum_attr.InputXGradient(_f(conv_policy)).attribute(x, target=a)
    assert th.allclose(ours, theirs, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_left", "riemann_right"])
def test_integrated_gradients_matches_captum(captum_attr, conv_policy, frames, method):
    x, a = frames
    ours = IntegratedGradients(n_steps=12, method=method, target="logit", batch_size=7).attribute(conv_policy, x, a)
    theirs = captum_attr.IntegratedGradients(_f(conv_policy)).attribute(
        x, baselines=th.zeros_like(x), target=a, n_steps=12, method=method
    )
    assert th.allclose(ours, theirs, atol=1e-6)


def test_integrated_gradients_linear_and_completeness(conv_policy, frames):
    lin = LinearPolicy()
    x = th.rand(2, 2, 6, 6)
    a = th.tensor([1, 2])
    attr = IntegratedGradients(n_steps=5, baseline="uniform", target="logit").attribute(lin, x, a)
    expected = (x - 0.5) * lin.fc.weight[a].view(2, 2, 6, 6)
    assert th.allclose(attr, expected, atol=1e-6)
    x, a = frames
    ig = IntegratedGradients(n_steps=64, method="riemann_trapezoid", target="logit")
    attr = ig.attribute(conv_policy, x, a)
    with th.no_grad():
        gap = conv_policy(x).gather(1, a[:, None]).squeeze(1) - conv_policy(th.zeros_like(x)).gather(1, a[:, None]).squeeze(1)
    assert th.allclose(attr.sum((1, 2, 3)), gap, rtol=0.02, atol=1e-3)
    _, w = quadrature("riemann_trapezoid", 9)
    assert abs(w.sum() - 1.0) < 1e-12


@pytest.mark.parametrize("cls,nt_type", [(SmoothGrad, "smoothgrad"), (SmoothGradSq, "smoothgrad_sq"), (VarGrad, "vargrad")])
def test_noise_tunnel_family_matches_captum(captum_attr, conv_policy, frames, cls, nt_type):
    x, a = frames
    th.manual_seed(123)
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(_f(conv_policy))).attribute(
        x, nt_type=nt_type, nt_samples=6, stdevs=0.1, target=a, abs=False
    )
    th.manual_seed(123)
    ours = cls(n_samples=6, stdev=0.1, seed=None, target="logit").attribute(conv_policy, x, a)
    assert th.allclose(ours, theirs, atol=1e-6, rtol=1e-4)


def test_occlusion_matches_captum(captum_attr, conv_policy, frames):
    x, a = frames
    ours = Occlusion(window=4, stride=2, fill=0.0, target="logit", batch_size=50).attribute(conv_policy, x, a)
    theirs = captum_attr.Occlusion(_f(conv_policy)).attribute(
        x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=0.0, target=a
    )
    assert th.allclose(ours.expand_as(theirs), theirs, atol=1e-5)


def test_smoothing_of_a_linear_policy_returns_its_weights():
    lin = LinearPolicy()
    x = th.rand(4, 2, 6, 6)
    a = th.tensor([0, 1, 2, 0])
    w = lin.fc.weight[a].view(4, 2, 6, 6)
    for kernel in ("gaussian", "box", "laplace", "bump", "adaptive"):
        m = (
            AdaptGrad(n_samples=5, target="logit")
            if kernel == "adaptive"
            else Mollified(kernel=kernel, n_samples=5, noise_level=0.2, target="logit")
        )
        assert th.allclose(m.attribute(lin, x, a), w, atol=1e-6), kernel
    assert th.allclose(VarGrad(n_samples=5, target="logit").attribute(lin, x, a), th.zeros_like(x), atol=1e-8)
    assert th.allclose(SmoothGradSq(n_samples=5, target="logit").attribute(lin, x, a), w**2, atol=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "box", "laplace", "bump"])
def test_kernels_have_the_requested_std_and_support(kernel):
    g = th.Generator().manual_seed(0)
    z = sample_kernel(kernel, (400_000,), 0.05, g)
    assert abs(float(z.std()) - 0.05) < 0.0015
    assert abs(float(z.mean())) < 0.001
    if kernel == "box":
        assert float(z.abs().max()) <= 0.05 * math.sqrt(3) + 1e-6
    if kernel == "bump":
        assert float(z.abs().max()) < 0.05 / 0.3729 + 1e-4  # compact support (−r, r), r = σ / std(unit bump)


def test_adaptive_sigma_rule_and_bounds():
    x = th.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    sig = adaptive_sigma(x, confidence=0.95)
    expected = th.tensor([0.0, 0.25, 0.5, 0.1, 0.0]) / 1.959964
    assert th.allclose(sig, expected, atol=1e-5)
    assert th.allclose(adaptive_sigma(x, 0.95, sigma_floor=0.05).min(), th.tensor(0.05))
    with pytest.raises(ValueError, match="confidence"):
        adaptive_sigma(x, confidence=1.0)
    # P(x + ξ inside [0, 1]) = c for the centre pixel (both bounds at distance d)
    g = th.Generator().manual_seed(0)
    xs = th.full((200_000,), 0.5)
    inside = ((xs + sample_kernel("gaussian", xs.shape, adaptive_sigma(xs, 0.9), g)).sub(0.5).abs() <= 0.5).float().mean()
    assert abs(float(inside) - 0.9) < 0.005


def test_adaptgrad_on_a_saturated_frame_is_the_vanilla_gradient(conv_policy):
    x = (th.rand(2, 3, 16, 16) > 0.5).float()  # every pixel at a bound: σ_i = 0, no noise anywhere
    a = th.tensor([1, 3])
    assert th.allclose(
        AdaptGrad(n_samples=4).attribute(conv_policy, x, a), VanillaGradient().attribute(conv_policy, x, a), atol=1e-7
    )
    noisy = AdaptGrad(n_samples=4, sigma_floor=0.1).attribute(conv_policy, x, a)
    assert not th.allclose(noisy, VanillaGradient().attribute(conv_policy, x, a), atol=1e-7)


def test_seeded_maps_reproduce_and_batching_does_not_change_them(conv_policy, frames):
    x, a = frames
    m1 = SmoothGrad(n_samples=8, seed=5)(conv_policy, x, a)
    assert th.equal(m1, SmoothGrad(n_samples=8, seed=5)(conv_policy, x, a))
    assert not th.equal(m1, SmoothGrad(n_samples=8, seed=6)(conv_policy, x, a))
    ig_a = IntegratedGradients(n_steps=10, batch_size=1000).attribute(conv_policy, x, a)
    ig_b = IntegratedGradients(n_steps=10, batch_size=3).attribute(conv_policy, x, a)
    assert th.allclose(ig_a, ig_b, atol=1e-6)


class PlantedPixel(nn.Module):
    """Action 1 iff pixel (5, 9) is bright; nothing else matters."""

    def forward(self, image, side=None):
        v = image[:, 0, 5, 9]
        return th.stack([th.zeros_like(v), 8.0 * (v - 0.5)], 1)


@pytest.mark.parametrize("name", ["occlusion", "perturbation", "gradient", "integrated_gradients", "smoothgrad"])
def test_every_family_peaks_at_the_deciding_pixel(name):
    x = th.full((2, 1, 16, 16), 0.2)
    x[:, 0, 5, 9] = 1.0
    kw = {
        "occlusion": {"window": 3, "stride": 1},
        "perturbation": {"sigma_mask": 1.0, "sigma_blur": 1.0, "stride": 1},
        "smoothgrad": {"n_samples": 8},
    }.get(name, {})
    m = make_method(name, **kw)
    s = m(PlantedPixel(), x, th.tensor([1, 1]))
    assert s.shape == (2, 16, 16)
    for k in range(2):
        r, c = divmod(int(s[k].argmax()), 16)
        assert abs(r - 5) <= 1 and abs(c - 9) <= 1, (name, r, c)


def test_costs_interface_and_errors(conv_policy, frames):
    assert VanillaGradient().cost((3, 64, 64)).forward == 1
    assert SmoothGrad(n_samples=50).cost((3, 64, 64)).backward == 50
    assert AdaptGrad(n_samples=50).cost((3, 64, 64)).forward == 51  # the clean gradient counts as a sample
    assert PerturbationSaliency(stride=4).cost((3, 64, 64)).forward == 16 * 16 + 1
    assert Occlusion(window=8, stride=4).cost((3, 64, 64)).forward == 15 * 15 + 1
    assert set(METHODS) >= {
        "gradient",
        "grad_x_input",
        "integrated_gradients",
        "smoothgrad",
        "smoothgrad_sq",
        "vargrad",
        "adaptgrad",
        "mollify_box",
        "mollify_laplace",
        "mollify_bump",
        "perturbation",
        "occlusion",
    }
    with pytest.raises(ValueError, match="did you mean 'smoothgrad'"):
        make_method("smoothgard")
    x, a = frames
    with pytest.raises(ValueError, match="pass action"):
        VanillaGradient()(conv_policy, x, None)
    with pytest.raises(ValueError, match="reduce"):
        reduce_channels(x, "max")
    before = [p.clone() for p in conv_policy.parameters()]
    SmoothGrad(n_samples=2)(conv_policy, x, a)
    assert all(p.grad is None for p in conv_policy.parameters())
    assert all(th.equal(p, q) for p, q in zip(before, conv_policy.parameters()))
