"""Known-answer tests for gradient and perturbation saliency."""

import pytest
import torch as th
from torch import nn

from digr.contracts import greedy_action
from digr.saliency import (
    act_and_explain,
    gaussian_blur,
    gaussian_masks,
    gradient_saliency,
    input_gradient,
    perturbation_saliency,
)


class LinearPolicy(nn.Module):
    """logits = W · flatten(image) (+ side · V)."""

    def __init__(self, c=3, h=8, w=8, a=4, side_dim=0):
        super().__init__()
        self.lin = nn.Linear(c * h * w, a, bias=False)
        self.side = nn.Linear(side_dim, a, bias=False) if side_dim else None

    def forward(self, image, side=None):
        out = self.lin(image.flatten(1))
        return out if self.side is None else out + self.side(side)


def test_linear_policy_logit_gradient_equals_weights():
    pol = LinearPolicy()
    x = th.rand(5, 3, 8, 8)
    a = th.tensor([0, 1, 2, 3, 1])
    g = input_gradient(pol, x, a, target="logit")
    expected = pol.lin.weight.detach()[a].view(5, 3, 8, 8)
    assert th.allclose(g, expected, atol=1e-6)
    sal = gradient_saliency(pol, x, a, target="logit")
    assert th.allclose(sal, expected.abs().amax(1), atol=1e-6)


def test_act_and_explain_is_greedy_action_and_its_gradient_map_in_one_pass():
    th.manual_seed(0)
    pol = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    wrapped = lambda x, side=None: pol(x)
    x = th.rand(6, 3, 8, 8)
    calls = []
    pol.register_forward_hook(lambda *_: calls.append(1))
    action, sal = act_and_explain(wrapped, x)
    assert len(calls) == 1  # the acting forward pass is the only one
    expected_action = greedy_action(wrapped, x)
    assert th.equal(action, expected_action) and len(set(action.tolist())) > 1
    assert th.allclose(sal, gradient_saliency(wrapped, x, expected_action), atol=1e-7)
    assert all(p.grad is None for p in pol.parameters())


def test_gradient_matches_captum_saliency():
    captum = pytest.importorskip("captum.attr")
    pol = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    wrapped = lambda x, side=None: pol(x)
    x = th.rand(4, 3, 8, 8)
    a = th.tensor([0, 4, 2, 1])
    ours = input_gradient(wrapped, x, a, target="logit")
    ref = captum.Saliency(pol).attribute(x, target=a, abs=False)
    assert th.allclose(ours, ref, atol=1e-6)


def test_log_prob_gradient_of_linear_policy():
    pol = LinearPolicy(a=3)
    x = th.rand(2, 3, 8, 8)
    a = th.tensor([2, 0])
    g = input_gradient(pol, x, a, target="log_prob")
    w = pol.lin.weight.detach()
    p = th.softmax(pol(x), 1).detach()
    expected = (w[a] - p @ w).view(2, 3, 8, 8)  # ∂ log softmax_a / ∂x = w_a − Σ_k p_k w_k
    assert th.allclose(g, expected, atol=1e-5)


def test_side_input_reaches_the_policy_and_is_left_untouched():
    """log π(a|x, s) of a linear policy with a side input: ∂/∂x = w_a − Σ_k p_k w_k with p = softmax(W·x + V·s), so
    the image gradient depends on s; a method that dropped the side input would get p, and the gradient, wrong."""
    th.manual_seed(0)
    pol = LinearPolicy(a=3, side_dim=2)
    with th.no_grad():
        pol.side.weight.mul_(20.0)  # a side input that moves the probabilities a lot
    x, s, a = th.rand(2, 3, 8, 8), th.rand(2, 2), th.tensor([2, 0])
    s_before = s.clone()
    g = input_gradient(pol, x, a, s, target="log_prob")
    w = pol.lin.weight.detach()
    p = th.softmax(pol(x, s), 1).detach()
    assert th.allclose(g, (w[a] - p @ w).view(2, 3, 8, 8), atol=1e-5)
    without_side = (w[a] - th.softmax(pol.lin(x.flatten(1)), 1).detach() @ w).view(2, 3, 8, 8)
    assert not th.allclose(g, without_side, atol=1e-3)  # the side input changed the answer
    assert th.equal(s, s_before) and not s.requires_grad
    sal = gradient_saliency(pol, x, a, s)
    assert th.allclose(sal, g.abs().amax(1))


class PlantedPixelPolicy(nn.Module):
    """Action 1 is chosen iff pixel (r, c) of channel 0 is bright; nothing else matters."""

    def __init__(self, r, c):
        super().__init__()
        self.r, self.c = r, c

    def forward(self, image, side=None):
        v = image[:, 0, self.r, self.c]
        return th.stack([th.zeros_like(v), 10 * (v - 0.5)], dim=1)


@pytest.mark.parametrize("rc", [(5, 7), (20, 11), (30, 30)])
def test_perturbation_map_peaks_at_planted_pixel(rc):
    r, c = rc
    x = th.zeros(1, 1, 32, 32)
    x[0, 0, r, c] = 1.0
    pol = PlantedPixelPolicy(r, c)
    assert pol(x).argmax(1).item() == 1
    sal, _grid = perturbation_saliency(pol, x, sigma_mask=2.0, sigma_blur=1.5, stride=2, return_grid=True)
    peak = divmod(int(sal[0].argmax()), 32)
    assert abs(peak[0] - r) <= 1 and abs(peak[1] - c) <= 1
    # far from the pixel the perturbation cannot change the logits
    assert sal[0, (r + 16) % 32, (c + 16) % 32] < 1e-3 * sal.max()


def test_perturbation_is_batched_consistently():
    pol = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3))
    f = lambda x, side=None: pol(x)
    x = th.rand(3, 3, 16, 16)
    full = perturbation_saliency(f, x, sigma_mask=2, sigma_blur=1.5, stride=4, internal_batch_size=4096)
    small = perturbation_saliency(f, x, sigma_mask=2, sigma_blur=1.5, stride=4, internal_batch_size=7)
    single = th.cat([perturbation_saliency(f, x[i : i + 1], sigma_mask=2, sigma_blur=1.5, stride=4) for i in range(3)])
    assert th.allclose(full, small, atol=1e-5) and th.allclose(full, single, atol=1e-5)


def test_gaussian_masks_and_blur():
    m = gaussian_masks(16, 16, sigma=2.0, stride=4)
    assert m.shape == (16, 16, 16)
    assert th.allclose(m.amax((1, 2)), th.ones(16)) and m.min() >= 0
    x = th.rand(2, 3, 16, 16)
    b = gaussian_blur(x, 1.0)
    assert b.shape == x.shape
    assert th.allclose(b.mean((2, 3)), x.mean((2, 3)), atol=0.02)  # blur preserves mean (reflect padding)
    const = th.full((1, 1, 16, 16), 0.3)
    assert th.allclose(gaussian_blur(const, 2.0), const, atol=1e-6)
    with pytest.raises(ValueError):
        gaussian_blur(x, 0.0)
