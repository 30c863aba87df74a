"""Point-cloud jet taggers with several inputs: ``model(points, features, mask)``.

Both models take the three arrays :func:`psdist.hep.pythia.write_jets` stores, read through
``ZarrDataset(path, inputs=["points", "x", "mask"], targets="y")``:

- ``points`` (B, P, 2): Δη, Δφ of each particle to the jet axis;
- ``features`` (B, P, F): per-particle features, by default psdist's Pythia ones (pT / jet pT,
  Δη, Δφ, pid code), scaled by :class:`~psdist.hep.models.ParticleFeatures`;
- ``mask`` (B, P) bool: True for real particles, False for padding.

Padded rows may hold anything (zeros, junk, even values whose logarithm is undefined): every
computation either masks them out or reads sanitised copies, so appending or interleaving padded
particles leaves the logits unchanged, and so does permuting the real particles. Neither model
uses BatchNorm (a padding-aware BatchNorm would still couple the rows of a minibatch, and stale
asynchronous updates make BatchNorm unstable, see :mod:`psdist.hep.models`).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from psdist.hep.models import ParticleFeatures

__all__ = [
    "ClassAttention",
    "EdgeConv",
    "PairwiseFeatures",
    "ParticleAttention",
    "ParticleNet",
    "ParticleTransformer",
    "knn",
    "part_tagger",
    "particlenet",
]

# masked attention logits: finite (a jet whose particles are all masked gives a uniform softmax,
# not NaN) yet exp(_NEG - max) is exactly 0 in float32 and bfloat16 alike
_NEG = -1e9


def _clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with padded rows set to zero: whatever padding holds never reaches a log or a sum."""
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _embed(features: int, pythia_features: bool) -> tuple[nn.Module, int]:
    if not pythia_features:
        return nn.Identity(), features
    if features != 4:
        raise ValueError(f"pythia_features expects 4 input features (z, deta, dphi, pid), got {features}")
    return ParticleFeatures(), ParticleFeatures.out_features


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real particles of (B, P, C); a jet without any counts as one zero particle."""
    n = mask.sum(dim=1, keepdim=True).clamp(min=1).to(h.dtype)
    return _clean(h, mask).sum(dim=1) / n


# ------------------------------------------------------------------------------------ ParticleNet
def knn(coords: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest real neighbours of every particle (itself excluded).

    Parameters
    ----------
    coords
        (B, P, D) coordinates; distances are computed in float32 even under autocast, so that a
        bfloat16 rounding does not reorder close neighbours.
    mask
        (B, P) bool, True for real particles.
    k
        Neighbours per particle; more than P - 1 is cut to P - 1.

    Returns
    -------
    (idx, valid)
        ``idx`` (B, P, k') int64 neighbour indices and ``valid`` (B, P, k') bool, False where a
        jet has fewer than k' + 1 real particles (those slots point at padding and must be
        ignored), k' = min(k, P - 1).
    """
    p = coords.shape[1]
    k = max(1, min(k, p - 1))
    c = coords.float()
    d = (c.unsqueeze(2) - c.unsqueeze(1)).pow(2).sum(-1)  # (B, P, P)
    self_pair = torch.eye(p, dtype=torch.bool, device=c.device)
    bad = ~mask.unsqueeze(1) | self_pair  # a neighbour must be real and not the particle itself
    d = d.masked_fill(bad, float("inf"))
    dist, idx = d.topk(k, dim=-1, largest=False)
    return idx, torch.isfinite(dist)


def _gather(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (B, P, k) of ``h`` (B, P, C) per jet, as (B, P, k, C)."""
    b, p, c = h.shape
    offset = torch.arange(b, device=h.device).view(b, 1, 1) * p
    return h.reshape(b * p, c)[(idx + offset).reshape(-1)].view(*idx.shape, c)


class EdgeConv(nn.Module):
    """One EdgeConv block: an MLP on each edge (x_i, x_j − x_i), averaged over the k neighbours.

    The first layer is applied per particle and then gathered (W·[x_i, x_j − x_i] = A·x_i + B·x_j),
    which costs k times fewer multiplications than building the edge features first. A linear
    shortcut carries x_i past the block, as in ParticleNet.
    """

    def __init__(self, in_features: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.center = nn.Linear(in_features, channels[0])
        self.neighbour = nn.Linear(in_features, channels[0], bias=False)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(channels):
            layers += [nn.ReLU(), nn.Linear(a, b)]
        self.edge = nn.Sequential(*layers, nn.ReLU())
        self.shortcut = nn.Linear(in_features, channels[-1])
        self.out_features = channels[-1]

    def forward(self, h: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, P, C_in) → (B, P, C_out), edges given by :func:`knn`'s ``idx`` and ``valid``."""
        nb = self.neighbour(h)
        a = self.center(h) - nb  # the x_i part of W·[x_i, x_j − x_i]
        e = self.edge(a.unsqueeze(2) + _gather(nb, idx))  # (B, P, k, C)
        e = torch.where(valid.unsqueeze(-1), e, torch.zeros((), dtype=e.dtype, device=e.device))
        mean = e.sum(dim=2) / valid.sum(dim=2, keepdim=True).clamp(min=1).to(e.dtype)
        out: torch.Tensor = torch.relu(mean + self.shortcut(h))
        return out


class ParticleNet(nn.Module):
    """A small ParticleNet-style tagger (H. Qu and L. Gouskos, "ParticleNet: Jet Tagging via
    Particle Clouds", Phys. Rev. D 101, 056019 (2020), arXiv:1902.08570).

    A jet is a point cloud. The first EdgeConv block links each particle to its ``k`` nearest
    real neighbours in the (Δη, Δφ) plane; each later block recomputes the neighbours in the
    previous block's feature space (the dynamic graph of the paper). The per-particle outputs of
    the last block are averaged over the real particles and classified by a small MLP.

    Compared with the paper's ParticleNet-Lite (k = 7, blocks of (32, 32, 32) and (64, 64, 64)
    with BatchNorm, 256-unit head, dropout): no BatchNorm and no dropout (see the module notes),
    a mean-over-neighbours EdgeConv with a linear shortcut, and two smaller blocks by default.

    Call it as ``model(points, features, mask)`` with points (B, P, 2), features (B, P, F) and
    mask (B, P) bool; returns logits (B, classes).
    """

    def __init__(
        self,
        features: int = 4,
        classes: int = 2,
        k: int = 8,
        blocks: tuple[tuple[int, ...], ...] = ((32, 32), (48, 48)),
        hidden: int = 64,
        pythia_features: bool = True,
    ) -> None:
        super().__init__()
        self.k = k
        self.embed, width = _embed(features, pythia_features)
        convs = []
        for channels in blocks:
            convs.append(EdgeConv(width, tuple(channels)))
            width = channels[-1]
        self.convs = nn.ModuleList(convs)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, points: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        h = self.embed(_clean(features, mask))
        coords = _clean(points, mask)
        for conv in self.convs:
            idx, valid = knn(coords, mask, self.k)
            h = _clean(conv(h, idx, valid), mask)
            coords = h  # the next block's neighbours: nearest in this block's feature space
        logits: torch.Tensor = self.head(_masked_mean(h, mask))
        return logits


def particlenet(
    features: int = 4,
    classes: int = 2,
    k: int = 8,
    blocks: tuple[tuple[int, ...], ...] = ((32, 32), (48, 48)),
    hidden: int = 64,
    pythia_features: bool = True,
) -> nn.Module:
    """A :class:`ParticleNet` (a psdist ``model_fn``: ``psdist.hep.taggers:particlenet``).

    Parameters
    ----------
    features
        Per-particle input features F (4 for psdist's Pythia jets).
    classes
        Output logits.
    k
        Nearest neighbours per particle in each EdgeConv block.
    blocks
        Channels of each EdgeConv block's edge MLP.
    hidden
        Width of the classifier after pooling.
    pythia_features
        Scale psdist's Pythia features (z, Δη, Δφ, pid) with
        :class:`~psdist.hep.models.ParticleFeatures` first (needs ``features=4``).

    Returns
    -------
    nn.Module
        Called as ``model(points, features, mask)``, returns (B, classes) logits. About 12 k
        parameters with the defaults.
    """
    return ParticleNet(features, classes, k, blocks, hidden, pythia_features)


# ----------------------------------------------------------------------------- Particle Transformer
class PairwiseFeatures(nn.Module):
    """The interaction features of Particle Transformer for every particle pair, (B, 4, P, P).

    ln Δ, ln kT, ln z and ln m² of the pair (a, b), with Δ² = Δη² + Δφ², kT = min(pT_a, pT_b)·Δ,
    z = min(pT_a, pT_b) / (pT_a + pT_b) and, for massless particles, m² = 2 pT_a pT_b (cosh Δη −
    cos Δφ). Momenta are in units of the jet pT (psdist's first feature is pT / jet pT): this
    shifts ln kT and ln m² by a constant per jet and leaves ln Δ and ln z unchanged. Angles are
    differences of the stored Δη, Δφ (both to the jet axis), so the jet axis drops out.

    Everything is computed in float32 from sanitised inputs, and logarithms of squares replace
    square roots, so the diagonal (Δ = 0) and padded pairs give no NaN, neither forward nor in
    the gradient. Pairs with a padded particle, and the diagonal, are set to zero.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pt: torch.Tensor, points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``pt`` (B, P), ``points`` (B, P, 2) Δη, Δφ and ``mask`` (B, P) → (B, 4, P, P)."""
        pt = torch.where(mask, pt.float(), torch.ones((), device=pt.device))  # ln needs pT > 0
        pt = pt.clamp(min=self.eps)
        c = _clean(points.float(), mask)
        d = c.unsqueeze(2) - c.unsqueeze(1)  # (B, P, P, 2)
        delta2 = d.pow(2).sum(-1).clamp(min=self.eps)
        pa, pb = pt.unsqueeze(2), pt.unsqueeze(1)
        low = torch.minimum(pa, pb)
        m2 = (2 * pa * pb * (torch.cosh(d[..., 0]) - torch.cos(d[..., 1]))).clamp(min=self.eps)
        ln_delta = 0.5 * torch.log(delta2)
        u = torch.stack(
            [ln_delta, torch.log(low) + ln_delta, torch.log(low / (pa + pb)), torch.log(m2)], dim=1
        )
        p = mask.shape[1]
        pair = mask.unsqueeze(2) & mask.unsqueeze(1) & ~torch.eye(p, dtype=torch.bool, device=mask.device)
        return torch.where(pair.unsqueeze(1), u, torch.zeros((), device=u.device))


class ParticleAttention(nn.Module):
    """A pre-norm transformer block whose attention logits get a per-head pairwise bias U.

    softmax(q·kᵀ/√d + U) over the real particles only; padded keys get a logit of −1e9, so their
    weight is exactly zero and their (sanitised) values never contribute.
    """

    def __init__(self, dim: int, heads: int, expansion: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, expansion * dim), nn.GELU(), nn.Linear(expansion * dim, dim))

    def forward(self, h: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h`` (B, P, dim), ``bias`` (B, heads, P, P), ``mask`` (B, P) → (B, P, dim)."""
        b, p, dim = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, p, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) * (dim // self.heads) ** -0.5 + bias
        logits = logits.masked_fill(~mask.view(b, 1, 1, p), _NEG)
        att = (logits.softmax(dim=-1).to(v.dtype) @ v).transpose(1, 2).reshape(b, p, dim)
        h = h + self.proj(att)
        out: torch.Tensor = h + self.ffn(self.norm2(h))
        return out


class ClassAttention(nn.Module):
    """A class-attention block (CaiT-style, as in Particle Transformer): only the class token
    queries; the keys and values are the class token and the real particles."""

    def __init__(self, dim: int, heads: int, expansion: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, expansion * dim), nn.GELU(), nn.Linear(expansion * dim, dim))

    def forward(self, cls: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``cls`` (B, 1, dim), particles ``h`` (B, P, dim), ``mask`` (B, P) → new ``cls``."""
        b, p, dim = h.shape
        z = self.norm1(torch.cat([cls, h], dim=1))  # (B, 1 + P, dim)
        q = self.q(z[:, :1]).view(b, 1, self.heads, -1).transpose(1, 2)  # (B, heads, 1, d)
        k, v = self.kv(z).view(b, 1 + p, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # the class token is always a key
        logits = (q @ k.transpose(-1, -2) * (dim // self.heads) ** -0.5).masked_fill(~keep.view(b, 1, 1, -1), _NEG)
        a = (logits.softmax(dim=-1).to(v.dtype) @ v).transpose(1, 2).reshape(b, 1, dim)
        cls = cls + self.proj(a)
        out: torch.Tensor = cls + self.ffn(self.norm2(cls))
        return out


class ParticleTransformer(nn.Module):
    """A small Particle-Transformer-style tagger (H. Qu, C. Li and S. Qian, "Particle Transformer
    for Jet Tagging", ICML 2022, arXiv:2202.03772).

    Each particle is embedded by an MLP; the pairwise features of :class:`PairwiseFeatures`
    (ln Δ, ln kT, ln z, ln m²) are embedded per pair by a pointwise MLP into one bias per head,
    added to the attention logits of every particle-attention block (the paper's P-MHA). After
    the particle blocks a learned class token attends to the particles (class-attention blocks)
    and is classified. There are no positional encodings: the output does not depend on the
    particles' order.

    Compared with the paper (8 particle blocks and 2 class blocks of width 128, 8 heads, pair
    embedding (64, 64, 64)): two particle blocks and one class block of width 32 with 4 heads,
    and a (16, 16) pair embedding by default — a few minutes of training on 2 CPU cores.

    Call it as ``model(points, features, mask)`` like :class:`ParticleNet`; the pairwise features
    take the pT fraction from ``features[..., pt_index]`` (raw, before any scaling) and the angles
    from ``points``.
    """

    def __init__(
        self,
        features: int = 4,
        classes: int = 2,
        dim: int = 32,
        heads: int = 4,
        blocks: int = 2,
        class_blocks: int = 1,
        pair_hidden: tuple[int, ...] = (16, 16),
        pt_index: int = 0,
        pythia_features: bool = True,
    ) -> None:
        super().__init__()
        self.pt_index = pt_index
        self.embed, width = _embed(features, pythia_features)
        self.particle = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pairs = PairwiseFeatures()
        pair: list[nn.Module] = []
        width = 4
        for n in pair_hidden:  # 1x1 convolutions in the paper: the same MLP on every pair
            pair += [nn.Linear(width, n), nn.GELU()]
            width = n
        self.pair_embed = nn.Sequential(*pair, nn.Linear(width, heads))
        self.blocks = nn.ModuleList(ParticleAttention(dim, heads) for _ in range(blocks))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.class_blocks = nn.ModuleList(ClassAttention(dim, heads) for _ in range(class_blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, points: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        features = _clean(features, mask)
        u = self.pairs(features[..., self.pt_index], points, mask)  # (B, 4, P, P), float32
        bias = self.pair_embed(u.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, heads, P, P)
        h = _clean(self.particle(self.embed(features)), mask)
        for block in self.blocks:
            h = _clean(block(h, bias, mask), mask)
        cls = self.cls.expand(h.shape[0], 1, -1).to(h.dtype)
        for block in self.class_blocks:
            cls = block(cls, h, mask)
        logits: torch.Tensor = self.head(self.norm(cls[:, 0]))
        return logits


def part_tagger(
    features: int = 4,
    classes: int = 2,
    dim: int = 32,
    heads: int = 4,
    blocks: int = 2,
    class_blocks: int = 1,
    pair_hidden: tuple[int, ...] = (16, 16),
    pt_index: int = 0,
    pythia_features: bool = True,
) -> nn.Module:
    """A :class:`ParticleTransformer` (a psdist ``model_fn``: ``psdist.hep.taggers:part_tagger``).

    Parameters
    ----------
    features
        Per-particle input features F (4 for psdist's Pythia jets).
    classes
        Output logits.
    dim, heads
        Particle embedding width and attention heads.
    blocks, class_blocks
        Particle-attention blocks (with the pairwise bias) and class-attention blocks.
    pair_hidden
        Hidden widths of the per-pair MLP that turns the 4 interaction features into one
        attention bias per head.
    pt_index
        Column of ``features`` holding the particle pT (any unit common to the jet; psdist's
        Pythia jets store pT / jet pT in column 0).
    pythia_features
        Scale psdist's Pythia features with :class:`~psdist.hep.models.ParticleFeatures` before
        the particle embedding (needs ``features=4``).

    Returns
    -------
    nn.Module
        Called as ``model(points, features, mask)``, returns (B, classes) logits. About 28 k
        parameters with the defaults.
    """
    return ParticleTransformer(features, classes, dim, heads, blocks, class_blocks, pair_hidden, pt_index,
                               pythia_features)
