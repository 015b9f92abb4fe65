"""Known answers for the saliency-quality metrics (digr.evaluation.metrics) and the policy-based ones
(digr.evaluation.faithfulness)."""

import numpy as np
import pytest
import torch as th
from torch import nn

from digr.evaluation.faithfulness import (
    FaithfulnessCurves,
    deletion_curve,
    insertion_curve,
    perturbation_curve,
    randomize_weights,
    sanity_check,
)
from digr.evaluation.metrics import gini, pearson, topk_auc
from digr.saliency import gaussian_blur, gradient_saliency

# ---------------------------------------------------------------------------------------------------------------- pearson


def test_pearson_affine_known_answers():
    m = np.random.default_rng(0).random((3, 8, 8))
    np.testing.assert_allclose(pearson(m, 2 * m + 1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pearson(m, -m), -1.0, atol=1e-12)
    np.testing.assert_allclose(pearson(th.tensor(m), th.tensor(3 * m - 2)), 1.0, atol=1e-12)


def test_pearson_matches_numpy_and_constant_is_nan():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 6, 5)), rng.random((4, 6, 5))
    want = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(4)]
    np.testing.assert_allclose(pearson(a, b), want, atol=1e-12)
    b[2] = 0.1  # constant map (its mean is not exactly 0.1 in floating point)
    a[3, 0, 0] = np.nan
    out = pearson(a, b)
    assert np.isnan(out[2]) and np.isnan(out[3]) and np.isfinite(out[:2]).all()


def test_pearson_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        pearson(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


# --------------------------------------------------------------------------------------------------------------- topk_auc


def test_topk_auc_known_answers():
    ref = np.random.default_rng(2).random((3, 10, 10))
    np.testing.assert_allclose(topk_auc(ref, ref), 1.0)
    np.testing.assert_array_equal(topk_auc(np.zeros_like(ref), ref), 0.5)  # all ties: exactly chance
    np.testing.assert_allclose(topk_auc(-ref, ref), 0.0)
    np.testing.assert_allclose(topk_auc(ref**3 + 5, ref, percent=25.0), 1.0)  # ranks only


def _auc_bruteforce(a, pos):
    p, n = a[pos], a[~pos]
    d = p[:, None] - n[None, :]
    return (d > 0).mean() + 0.5 * (d == 0).mean()


def test_topk_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, (5, 7, 9)).astype(float)  # many ties in the scores
    ref = rng.random((5, 7, 9))
    got = topk_auc(a, ref, percent=20.0)
    k = round(63 * 0.2)
    for i in range(5):
        pos = np.zeros(63, bool)
        pos[np.argsort(-ref[i].ravel(), kind="stable")[:k]] = True
        assert got[i] == pytest.approx(_auc_bruteforce(a[i].ravel(), pos), abs=1e-12)


def test_topk_auc_reference_ties_follow_top_mask():
    # reference constant: positives are the first k pixels by position (like topk_iou), so a ramp that decreases
    # with the pixel index ranks them first (AUC 1) and an increasing ramp ranks them last (AUC 0)
    ref = np.ones((1, 4, 5))
    ramp = np.arange(20, dtype=float).reshape(1, 4, 5)
    assert topk_auc(-ramp, ref, percent=10.0)[0] == pytest.approx(1.0)
    assert topk_auc(ramp, ref, percent=10.0)[0] == pytest.approx(0.0)


def test_topk_auc_bad_input():
    with pytest.raises(ValueError, match="percent"):
        topk_auc(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), percent=100.0)
    with pytest.raises(ValueError, match="same shape"):
        topk_auc(np.zeros((1, 4, 4)), np.zeros((2, 4, 4)))
    a = np.random.default_rng(0).random((2, 4, 4))
    a[1, 0, 0] = np.inf
    out = topk_auc(a, a)
    assert out[0] == 1.0 and np.isnan(out[1])


# ------------------------------------------------------------------------------------------------------------------ gini


def test_gini_known_answers():
    n = 64
    one_hot = np.zeros((1, 8, 8))
    one_hot[0, 3, 5] = 7.0
    assert gini(one_hot)[0] == pytest.approx((n - 1) / n, abs=1e-12)
    assert gini(np.full((1, 8, 8), 0.3))[0] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(gini(np.zeros((1, 8, 8)))[0])
    # two equal spikes among n: G = (n - 2) / n
    two = np.zeros((1, 8, 8))
    two[0, 0, 0] = two[0, 7, 7] = 1.0
    assert gini(two)[0] == pytest.approx((n - 2) / n, abs=1e-12)


def test_gini_matches_mean_absolute_difference_and_is_scale_invariant():
    x = np.random.default_rng(4).normal(size=(3, 6, 6))
    g = gini(x)
    for i in range(3):
        v = np.abs(x[i].ravel())
        want = np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size * v.sum())
        assert g[i] == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(gini(1000 * x), g, atol=1e-12)
    np.testing.assert_allclose(gini(-0.01 * x), g, atol=1e-12)
    assert ((g > 0) & (g < 1)).all()


# ------------------------------------------------------------------------------------------------ deletion / insertion

H = W = 8
PLANT = (2, 5)  # pixel that decides the action
A = 4


class PlantedPolicy(nn.Module):
    """logit_0 = 10 · x[channel 2, PLANT]; other logits 0, plus an optional linear side term."""

    def __init__(self, side_dim=0):
        super().__init__()
        self.side_w = nn.Parameter(th.randn(side_dim, A) * 0.1) if side_dim else None

    def forward(self, image, side=None):
        logits = th.zeros(image.shape[0], A, dtype=image.dtype)
        logits[:, 0] = 10.0 * image[:, 2, PLANT[0], PLANT[1]]
        if side is not None:
            logits = logits + side @ self.side_w
        return logits


def _frames(b=2, seed=0):
    g = th.Generator().manual_seed(seed)
    img = th.rand(b, 3, H, W, generator=g) * 0.2
    img[:, :, PLANT[0], PLANT[1]] = 1.0
    good = th.rand(b, H, W, generator=g) * 0.5
    good[:, PLANT[0], PLANT[1]] = 1.0
    return img, good


P_HIGH = float(np.exp(10.0) / (np.exp(10.0) + A - 1))


def test_deletion_in_correct_order_drops_probability_at_first_step():
    img, good = _frames()
    act = th.zeros(2, dtype=th.long)
    pol = PlantedPolicy()
    cur = deletion_curve(pol, img, good, act, replacement=0.0, n_steps=16)
    assert isinstance(cur, FaithfulnessCurves) and cur.mode == "deletion"
    assert cur.prob.shape == cur.kl.shape == (2, 17) and cur.fractions.shape == (17,) and cur.prob_auc.shape == (2,)
    assert cur.fractions[0] == 0.0 and cur.fractions[-1] == 1.0
    np.testing.assert_allclose(cur.prob[:, 0], P_HIGH, rtol=1e-6)
    np.testing.assert_allclose(cur.prob[:, 1:], 1.0 / A, rtol=1e-6)  # planted pixel gone after the first 4 pixels
    np.testing.assert_allclose(cur.kl[:, 0], 0.0, atol=1e-9)
    rev = deletion_curve(pol, img, -good, act, replacement=0.0, n_steps=16)
    np.testing.assert_allclose(rev.prob[:, :-1], P_HIGH, rtol=1e-6)  # planted pixel deleted only at fraction 1
    np.testing.assert_allclose(rev.prob[:, -1], 1.0 / A, rtol=1e-6)
    assert (cur.prob_auc < 0.3).all() and (rev.prob_auc > 0.95).all()
    assert (cur.prob_auc < rev.prob_auc).all() and (cur.kl_auc > rev.kl_auc).all()
    # trapezoid by hand
    np.testing.assert_allclose(cur.prob_auc, ((cur.prob[:, 1:] + cur.prob[:, :-1]) / 2).sum(1) / 16, rtol=1e-12)


def test_insertion_is_the_opposite():
    img, good = _frames()
    act = th.zeros(2, dtype=th.long)
    pol = PlantedPolicy()
    cur = insertion_curve(pol, img, good, act, replacement=0.0, n_steps=16)
    rev = insertion_curve(pol, img, -good, act, replacement=0.0, n_steps=16)
    np.testing.assert_allclose(cur.prob[:, 0], 1.0 / A, rtol=1e-6)
    np.testing.assert_allclose(cur.prob[:, 1:], P_HIGH, rtol=1e-6)
    np.testing.assert_allclose(rev.prob[:, :-1], 1.0 / A, rtol=1e-6)
    np.testing.assert_allclose(cur.kl[:, -1], 0.0, atol=1e-9)
    assert (cur.prob_auc > rev.prob_auc).all() and (cur.kl_auc < rev.kl_auc).all()


def test_endpoints_equal_policy_on_blurred_replacement():
    img, good = _frames(3, seed=1)
    pol = PlantedPolicy()
    act = th.tensor([0, 1, 3])
    sigma = 1.5
    dele = deletion_curve(pol, img, good, act, sigma=sigma, n_steps=5)
    ins = insertion_curve(pol, img, good, act, sigma=sigma, n_steps=5)
    clean = th.softmax(pol(img).double(), 1)
    blur = th.softmax(pol(gaussian_blur(img, sigma)).double(), 1)
    p_blur = blur[th.arange(3), act].numpy()
    kl_blur = (clean * (clean.log() - blur.log())).sum(1).numpy()
    np.testing.assert_allclose(dele.prob[:, -1], p_blur, rtol=1e-6)
    np.testing.assert_allclose(ins.prob[:, 0], p_blur, rtol=1e-6)
    np.testing.assert_allclose(dele.kl[:, -1], kl_blur, rtol=1e-5)
    np.testing.assert_allclose(dele.prob[:, 0], clean[th.arange(3), act].numpy(), rtol=1e-6)
    np.testing.assert_allclose(ins.prob[:, -1], clean[th.arange(3), act].numpy(), rtol=1e-6)
    assert (kl_blur > 1e-3).all()  # the blur really changes the decision, so the endpoint check is not vacuous


def test_ties_are_broken_by_pixel_index():
    img, _ = _frames(1)
    flat = th.zeros(1, H, W)  # all ties: deletion order is the pixel index
    cur = deletion_curve(PlantedPolicy(), img, flat, th.zeros(1, dtype=th.long), replacement=0.0, n_steps=H * W)
    idx = PLANT[0] * W + PLANT[1]  # deleted at step idx + 1 (one pixel per step)
    np.testing.assert_allclose(cur.prob[0, : idx + 1], P_HIGH, rtol=1e-6)
    np.testing.assert_allclose(cur.prob[0, idx + 1 :], 1.0 / A, rtol=1e-6)


def test_batching_and_side_input_do_not_change_results():
    img, good = _frames(5, seed=2)
    side = th.randn(5, 3)
    pol = PlantedPolicy(side_dim=3)
    act = th.tensor([0, 1, 2, 3, 0])
    big = perturbation_curve(pol, img, good, act, side, mode="insertion", n_steps=7, batch_size=1000)
    small = perturbation_curve(pol, img, good.numpy(), act, side, mode="insertion", n_steps=7, batch_size=3)
    np.testing.assert_allclose(small.prob, big.prob, rtol=1e-6)
    np.testing.assert_allclose(small.kl, big.kl, rtol=1e-6, atol=1e-12)


def test_curve_input_errors():
    img, good = _frames(2)
    pol, act = PlantedPolicy(), th.zeros(2, dtype=th.long)
    with pytest.raises(ValueError, match="mode"):
        perturbation_curve(pol, img, good, act, mode="both")
    with pytest.raises(ValueError, match="saliency must be"):
        deletion_curve(pol, img, good[:, None], act)
    with pytest.raises(ValueError, match="NaN"):
        deletion_curve(pol, img, good * float("nan"), act)
    with pytest.raises(ValueError, match="action"):
        deletion_curve(pol, img, good, th.tensor([0, A]))
    with pytest.raises(ValueError, match="broadcast"):
        deletion_curve(pol, img, good, act, replacement=th.zeros(2, 3, 4, 4))


# ---------------------------------------------------------------------------------------------------- sanity check


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 16 * 16, A)
        self.temperature = nn.Parameter(th.zeros(()))  # owned by no module with reset_parameters()

    def forward(self, image, side=None):
        return self.head(self.conv(image).flatten(1)) * self.temperature.exp()


def _trained_tinyconv():
    """TinyConv trained for a few steps to pick action = which image half holds a bright blob."""
    th.manual_seed(0)
    net = TinyConv()
    opt = th.optim.Adam(net.parameters(), lr=3e-3)
    g = th.Generator().manual_seed(0)
    for _ in range(30):
        x = th.rand(32, 3, 16, 16, generator=g) * 0.3
        y = th.randint(0, 2, (32,), generator=g)
        for i in range(32):
            c = int(th.randint(0, 8, (1,), generator=g)) + 8 * int(y[i])
            x[i, :, 6:9, c] = 1.0
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_randomize_weights_is_seeded_and_leaves_original_untouched():
    net = _trained_tinyconv()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    th.manual_seed(123)
    expected_next = th.rand(3)
    th.manual_seed(123)
    r1 = randomize_weights(net, seed=7)
    np.testing.assert_array_equal(th.rand(3), expected_next)  # caller's random stream untouched
    r2 = randomize_weights(net, seed=7)
    r3 = randomize_weights(net, seed=8)
    for k, v in net.state_dict().items():
        assert th.equal(v, before[k]), k
    for (k, p), p1, p2, p3 in zip(net.named_parameters(), r1.parameters(), r2.parameters(), r3.parameters()):
        assert th.equal(p1, p2), k
        assert not th.equal(p1, p), k
        assert not th.equal(p1, p3), k
    assert float(r1.temperature.detach()) != 0.0  # re-drawn although its std is 0 and no reset_parameters covers it
    assert not r1.training and type(r1) is TinyConv


def test_sanity_check_gradient_depends_on_weights_and_weight_free_method_does_not():
    net = _trained_tinyconv()
    g = th.Generator().manual_seed(5)
    img = th.rand(6, 3, 16, 16, generator=g) * 0.3
    img[:, :, 6:9, 4] = 1.0
    act = net(img).argmax(1)
    grad_corr = sanity_check(gradient_saliency, net, img, act, seed=0)
    assert grad_corr.shape == (6,) and np.isfinite(grad_corr).all()
    assert (grad_corr < 0.9).all(), grad_corr
    flat = sanity_check(lambda p, x, a, s: x.mean(1), net, img, act, seed=0)
    np.testing.assert_array_equal(flat, 1.0)


def test_randomize_weights_on_sb3_teacher():
    from gymnasium import spaces
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    from digr.policies import SB3Teacher
    from digr.policies.teacher import sb3_policy_kwargs

    obs = spaces.Dict({"image": spaces.Box(0, 255, (3, 16, 16), np.uint8), "side": spaces.Box(-1, 1, (2,), np.float32)})
    kw = sb3_policy_kwargs()
    kw["features_extractor_kwargs"] = {"cell": 8, "features_dim": 32}
    teacher = SB3Teacher(MultiInputActorCriticPolicy(obs, spaces.Discrete(A), lr_schedule=lambda _: 0.0, **kw)).eval()
    img, side = th.rand(3, 3, 16, 16), th.rand(3, 2)
    act = teacher(img, side).argmax(1)  # with gradients: SB3 now caches a non-leaf distribution on the policy
    assert teacher.policy.action_dist.distribution.logits.grad_fn is not None
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    rnd = randomize_weights(teacher, seed=0)
    assert isinstance(rnd, SB3Teacher) and rnd.policy is not teacher.policy
    for k, v in teacher.state_dict().items():
        assert th.equal(v, before[k]), k
    changed = [not th.equal(a, b) for a, b in zip(teacher.parameters(), rnd.parameters())]
    assert all(changed)
    corr = sanity_check(gradient_saliency, teacher, img, act, side, randomized=rnd)
    assert corr.shape == (3,) and (np.nan_to_num(corr, nan=0.0) < 0.9).all()
    corr2 = sanity_check(gradient_saliency, teacher, img, act, side, seed=0)  # copies a teacher with a grad cache
    np.testing.assert_allclose(corr2, corr)  # same seed, same randomised weights
