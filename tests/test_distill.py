"""DIGR loss terms: KL, masked penalty (zero where M = 0, differentiable), training reproducibility and resume."""

import numpy as np
import pytest
import torch as th
import torch.nn.functional as F
from torch import nn

from digr.method.distill import DistillData, train_student
from digr.method.loss import digr_loss, kl_teacher_student, masked_gradient_penalty
from digr.method.masks import selective_mask
from digr.policies.nets import PolicyNet


def test_kl_zero_for_identical_and_matches_torch():
    t = th.randn(8, 5)
    assert kl_teacher_student(t, t.clone()).abs() < 1e-6
    s = th.randn(8, 5)
    ref = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
    assert th.allclose(kl_teacher_student(t, s), ref, atol=1e-6)
    assert kl_teacher_student(t, s) > 0
    # temperature sharpens the teacher
    assert th.allclose(
        kl_teacher_student(t, s, tau=0.5),
        F.kl_div(F.log_softmax(s, 1), F.log_softmax(t / 0.5, 1), reduction="batchmean", log_target=True),
    )


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, image, side=None):
        return self.fc(th.tanh(self.conv(image)).flatten(1))


def test_penalty_zero_where_mask_zero_and_matches_manual():
    net = TinyNet()
    x = th.rand(4, 2, 4, 4)
    a = th.tensor([0, 1, 2, 0])
    assert masked_gradient_penalty(net, x, a, th.zeros(4, 4, 4)) == 0
    mask = (th.rand(4, 4, 4) > 0.5).float()
    xg = x.clone().requires_grad_(True)
    (g,) = th.autograd.grad(F.log_softmax(net(xg), 1).gather(1, a[:, None]).sum(), xg)
    manual = (mask[:, None] * g).pow(2).sum((1, 2, 3)).mean()
    assert th.allclose(masked_gradient_penalty(net, x, a, mask), manual, atol=1e-6)
    # the penalty only sees masked pixels: changing gradients elsewhere is invisible to it
    only_unmasked = masked_gradient_penalty(net, x, a, 1 - mask)
    full = masked_gradient_penalty(net, x, a, th.ones(4, 4, 4))
    assert th.allclose(only_unmasked + masked_gradient_penalty(net, x, a, mask), full, atol=1e-6)


def test_penalty_gradient_reaches_parameters_gradcheck():
    net = TinyNet().double()
    x = th.rand(2, 2, 4, 4, dtype=th.float64)
    a = th.tensor([1, 2])
    mask = (th.rand(2, 4, 4) > 0.3).double()
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())

    def f(*ps):
        fn = lambda img, side=None: th.func.functional_call(net, dict(zip(names, ps)), (img,))
        return masked_gradient_penalty(fn, x, a, mask)

    assert th.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5)
    total, _kl, _pen = digr_loss(net, x, th.randn(2, 3, dtype=th.float64), mask, lam=2.0)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_lambda_zero_is_plain_distillation():
    net = TinyNet()
    x, t = th.rand(3, 2, 4, 4), th.randn(3, 3)
    total, _kl, pen = digr_loss(net, x, t, th.ones(3, 4, 4), lam=0.0)
    assert pen == 0 and th.allclose(total, kl_teacher_student(t, net(x)))


def test_selective_mask_threshold_topp_dilate():
    s = th.zeros(1, 8, 8)
    s[0, 2, 3] = 1.0
    s[0, 5, 5] = 0.05
    m = selective_mask(s, kappa=0.1)
    assert m[0, 2, 3] == 0 and m[0, 5, 5] == 1 and m.sum() == 63
    m2 = selective_mask(s, kappa=0.01)
    assert m2[0, 5, 5] == 0
    d = selective_mask(s, kappa=0.1, dilate=1)
    assert d[0, 1:4, 2:5].sum() == 0 and d.sum() == 64 - 9
    t = selective_mask(th.arange(100.0).view(1, 10, 10), top_p=10)
    assert (1 - t).sum() == 10 and (1 - t)[0, 9].sum() == 10
    assert selective_mask(th.zeros(1, 4, 4)).sum() == 16  # nothing salient in an all-zero map
    with pytest.raises(ValueError):
        selective_mask(s, kappa=1.5)


def _data(n=96):
    rng = np.random.default_rng(0)
    return DistillData(
        rng.integers(0, 255, (n, 3, 16, 16), dtype=np.uint8),
        rng.normal(size=(n, 4)).astype(np.float32),
        None,
        (rng.random((n, 16, 16)) > 0.5).astype(np.float32),
    )


def _student():
    th.manual_seed(1)
    return PolicyNet((3, 16, 16), 4, cell=8, features_dim=32)


def test_seeded_training_reproduces_and_learns():
    h1 = train_student(_student(), _data(), lam=0.5, steps=100, batch_size=16, lr=3e-3, seed=3)
    h2 = train_student(_student(), _data(), lam=0.5, steps=100, batch_size=16, lr=3e-3, seed=3)
    assert h1 == [dict(r, sec=h1[i]["sec"]) for i, r in enumerate(h2)] or all(
        a["loss"] == b["loss"] and a["kl"] == b["kl"] and a["penalty"] == b["penalty"] for a, b in zip(h1, h2)
    )
    assert h1[-1]["kl"] < h1[0]["kl"]


def test_resume_continues_exactly(tmp_path):
    ref = _student()
    train_student(ref, _data(), lam=0.5, steps=100, batch_size=16, lr=3e-3, seed=3)
    s = _student()
    ck = tmp_path / "s.ckpt.pt"
    train_student(s, _data(), lam=0.5, steps=50, batch_size=16, lr=3e-3, seed=3, checkpoint_path=ck, checkpoint_every=50)
    resumed = _student()  # fresh weights, as after a crash: everything comes from the checkpoint
    train_student(
        resumed, _data(), lam=0.5, steps=100, batch_size=16, lr=3e-3, seed=3, checkpoint_path=ck, checkpoint_every=50
    )
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        assert th.allclose(a, b, atol=1e-6)


def test_penalty_on_a_row_subset_is_that_subsets_penalty():
    th.manual_seed(0)
    student = PolicyNet((3, 16, 16), 4, cell=4, features_dim=16)
    image, logits = th.rand(8, 3, 16, 16), th.randn(8, 4)
    mask = (th.rand(8, 16, 16) > 0.5).float()
    full = digr_loss(student, image, logits, mask, 0.1)
    assert th.allclose(digr_loss(student, image, logits, mask, 0.1, penalty_rows=th.arange(8))[0], full[0])
    rows = th.tensor([1, 4, 6])
    _, kl, pen = digr_loss(student, image, logits, mask, 0.1, penalty_rows=rows)
    assert th.allclose(kl, full[1])  # the KL term always sees the whole batch
    assert th.allclose(pen, masked_gradient_penalty(student, image[rows], logits[rows].argmax(1), mask[rows]))
    data = DistillData(
        (np.random.default_rng(0).random((32, 3, 16, 16)) * 255).astype(np.uint8),
        np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32),
        None,
        np.ones((32, 16, 16), np.float32),
    )
    runs = []
    for _ in range(2):
        th.manual_seed(0)
        s = PolicyNet((3, 16, 16), 4, cell=4, features_dim=16)
        runs.append(train_student(s, data, lam=0.1, steps=4, batch_size=8, lr=1e-3, seed=3, penalty_batch_size=2)[-1]["loss"])
    assert runs[0] == runs[1]


def test_grid_channels_shape_the_body_and_survive_save_load(tmp_path):
    from digr.policies import load_student, save_student

    student = PolicyNet((3, 16, 16), 4, cell=4, features_dim=16, channels=[8])
    convs = [m for m in student.body.conv if isinstance(m, th.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8] and student.body.fc[0].in_features == 8 * 4 * 4
    save_student(student, tmp_path / "s.safetensors")
    again = load_student(tmp_path / "s.safetensors")
    image = th.rand(2, 3, 16, 16)
    th.testing.assert_close(again(image), student(image), rtol=0, atol=0)
    assert PolicyNet((3, 16, 16), 4, cell=4).spec.get("channels") is None  # defaults are not written: old specs stay valid
    with pytest.raises(ValueError, match="channels"):
        PolicyNet((3, 16, 16), 4, cell=4, channels=[])
