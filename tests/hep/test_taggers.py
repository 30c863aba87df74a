"""The point-cloud taggers of psdist.hep.taggers: shapes, padding and permutation invariance,
gradients and bfloat16 autocast, on small seeded random jets (no Pythia needed)."""

from __future__ import annotations

import math

import pytest
import torch

from psdist.hep import taggers

MODELS = {"particlenet": taggers.particlenet, "part": taggers.part_tagger}


def _jets(seed: int = 0, b: int = 6, p: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-padded jets like psdist's Pythia ones: (z, Δη, Δφ, pid), 1 to p real particles each."""
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor([1, 2, 5, p, 7, 3])[:b]  # one and two particles: fewer than k + 1 neighbours
    mask = torch.arange(p) < n[:, None]
    z = torch.rand(b, p, generator=g).sort(dim=1, descending=True).values
    angles = 0.3 * torch.randn(b, p, 2, generator=g)
    pid = torch.randint(1, 6, (b, p), generator=g).float()
    x = torch.cat([z[..., None], angles, pid[..., None]], dim=-1) * mask[..., None]
    return angles * mask[..., None], x, mask


def _model(name: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(1)
    return MODELS[name](**kw).eval()


def _junk(b: int, extra: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padding that is not zero: large, negative (ln of a negative pT) and non-finite values."""
    g = torch.Generator().manual_seed(seed)
    points = 10 * torch.randn(b, extra, 2, generator=g)
    feats = 10 * torch.randn(b, extra, 4, generator=g)
    points[:, 0, 0], feats[:, 0, 0], feats[:, -1, 3] = math.nan, -math.inf, math.inf
    return points, feats


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shapes_and_parameters(name: str) -> None:
    points, x, mask = _jets()
    model = _model(name, classes=3)
    out = model(points, x, mask)
    assert out.shape == (6, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) < 50_000  # small: minutes on 2 CPU cores
    raw = _model(name, features=7, pythia_features=False)
    assert raw(points, torch.randn(6, 12, 7), mask).shape == (6, 2)
    with pytest.raises(ValueError, match="4 input features"):
        MODELS[name](features=7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_does_not_change_the_output(name: str) -> None:
    points, x, mask = _jets()
    model = _model(name)
    with torch.no_grad():
        ref = model(points, x, mask)
        jp, jx = _junk(6, 5, seed=2)
        # appended junk, masked out
        m2 = torch.cat([mask, torch.zeros(6, 5, dtype=torch.bool)], dim=1)
        padded = model(torch.cat([points, jp], 1), torch.cat([x, jx], 1), m2)
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)
        # the padding slots of the original jets filled with junk too, then everything shuffled
        p2, x2 = torch.cat([points, jp], 1), torch.cat([x, jx], 1)
        fill = ~m2
        p2[fill] = 7.0
        x2[fill] = -3.0
        perm = torch.randperm(17, generator=torch.Generator().manual_seed(3))
        shuffled = model(p2[:, perm], x2[:, perm], m2[:, perm])
        torch.testing.assert_close(shuffled, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_permuting_the_real_particles_does_not_change_the_output(name: str) -> None:
    points, x, mask = _jets(seed=4)
    model = _model(name)
    g = torch.Generator().manual_seed(5)
    idx = torch.stack([torch.randperm(12, generator=g) for _ in range(6)])  # one order per jet
    take = lambda a: torch.take_along_dim(a, idx.view(6, 12, *[1] * (a.dim() - 2)), dim=1)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(model(take(points), take(x), take(mask)), model(points, x, mask),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_every_parameter_and_stay_finite_with_junk_padding(name: str) -> None:
    points, x, mask = _jets(seed=6)
    jp, jx = _junk(6, 3, seed=7)
    model = _model(name).train()
    m2 = torch.cat([mask, torch.zeros(6, 3, dtype=torch.bool)], dim=1)
    out = model(torch.cat([points, jp], 1), torch.cat([x, jx], 1), m2)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 0, 1, 1, 0])).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_autocast(name: str) -> None:
    points, x, mask = _jets(seed=8)
    model = _model(name).train()
    ref = model(points, x, mask).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(points, x, mask)
        loss = torch.nn.functional.cross_entropy(out.float(), torch.tensor([0, 1, 0, 1, 1, 0]))
    loss.backward()
    assert out.dtype == torch.bfloat16 and out.shape == (6, 2)
    torch.testing.assert_close(out.float(), ref, atol=0.25, rtol=0.1)  # bfloat16 keeps ~3 digits
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_knn_picks_real_neighbours_only() -> None:
    coords = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [0.3, 0.0], [0.05, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, True, False, True]])
    idx, valid = taggers.knn(coords, mask, k=2)
    assert idx.shape == valid.shape == (1, 5, 2) and valid.all()
    assert idx[0, 0].tolist() == [1, 2]  # the masked particle at 0.05 is nobody's neighbour
    assert idx[0, 4].tolist() == [2, 1]
    few = taggers.knn(coords[:, :2], mask[:, :2], k=8)  # k is cut to P - 1
    assert few[0].tolist() == [[[1], [0]]] and few[1].all()
    lone = taggers.knn(coords[:, :3], torch.tensor([[True, False, False]]), k=2)[1]
    assert not lone[0, 0].any()  # a single real particle has no neighbour


def test_pairwise_features_of_one_pair() -> None:
    pt = torch.tensor([[0.6, 0.2, 0.0]])
    points = torch.tensor([[[0.0, 0.0], [0.3, -0.4], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    u = taggers.PairwiseFeatures()(pt, points, mask)
    assert u.shape == (1, 4, 3, 3)
    m2 = 2 * 0.6 * 0.2 * (math.cosh(0.3) - math.cos(0.4))
    expected = [math.log(0.5), math.log(0.2 * 0.5), math.log(0.2 / 0.8), math.log(m2)]
    torch.testing.assert_close(u[0, :, 0, 1], torch.tensor(expected))
    torch.testing.assert_close(u[0, :, 1, 0], u[0, :, 0, 1])  # symmetric
    assert not u[0, :, 2].any() and not u[0, :, :, 2].any() and not u[0, :, 0, 0].any()
