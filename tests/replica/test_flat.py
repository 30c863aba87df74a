"""Tests of psdist.core.layout: the flat float32 vector of a model's parameters and buffers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from psdist.core.layout import FlatSpec, Layout
from psdist.errors import CheckpointError, ModelError
from psdist.replica.binding import FlatBinding, flatten, spec_of, unflatten_into

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ConvNet(torch.nn.Module):
    """Conv2d + BatchNorm2d + Linear: parameters, float buffers and an int64 buffer."""

    def __init__(self, n_out: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, kernel_size=3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 5 * 5, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.flatten(1))


def make_net(seed: int, n_out: int = 3) -> ConvNet:
    torch.manual_seed(seed)
    return ConvNet(n_out)


def batch(seed: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 5, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x), y)


def autograd_grad(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """Summed gradients of ``batches`` on an ordinary (unbound) model, flattened by parameter."""
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        loss_of(model, x, y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()


# ----------------------------------------------------------------------------- FlatSpec
def test_spec_layout_params_first_then_buffers() -> None:
    net = make_net(0)
    spec = spec_of(net)
    n_params = sum(p.numel() for p in net.parameters())
    n_buffers = sum(b.numel() for b in net.buffers())
    assert spec.n_params == n_params
    assert spec.size == n_params + n_buffers
    assert spec.n_buffers == n_buffers
    kinds = [e.kind for e in spec.entries]
    assert kinds == ["param"] * 6 + ["buffer"] * 3
    by_name = {e.name: e for e in spec.entries}
    assert by_name["bn.num_batches_tracked"].dtype == "int64"
    assert by_name["bn.num_batches_tracked"].shape == ()
    assert by_name["bn.running_mean"].dtype == "float32"
    # entries tile the vector without gaps or overlaps
    offsets = [0] + [e.stop for e in spec.entries[:-1]]
    assert [e.offset for e in spec.entries] == offsets


def test_flatten_unflatten_round_trip_is_bit_exact() -> None:
    src = make_net(0)
    src.train()
    # move the BatchNorm running stats and the int64 counter away from their defaults
    for i in range(3):
        src(batch(i)[0])
    assert int(src.bn.num_batches_tracked) == 3
    spec = spec_of(src)
    flat = flatten(src, spec)
    assert flat.dtype == np.float32
    assert flat.shape == (spec.size,)

    dst = make_net(1)  # different initial weights and fresh BatchNorm statistics
    assert not torch.equal(dst.conv.weight, src.conv.weight)
    unflatten_into(dst, spec, flat)

    src_state, dst_state = src.state_dict(), dst.state_dict()
    assert src_state.keys() == dst_state.keys()
    for name, t in src_state.items():
        assert dst_state[name].dtype == t.dtype, name
        assert torch.equal(dst_state[name], t), name
    assert dst.bn.num_batches_tracked.dtype == torch.int64
    assert int(dst.bn.num_batches_tracked) == 3
    # and back again: the same bits
    assert flatten(dst, spec).tobytes() == flat.tobytes()


def test_unflatten_rejects_wrong_length() -> None:
    net = make_net(0)
    spec = spec_of(net)
    with pytest.raises(ModelError, match=str(spec.size)):
        unflatten_into(net, spec, np.zeros(spec.size + 1, dtype=np.float32))


def test_float64_model_raises_model_error() -> None:
    net = make_net(0).double()
    with pytest.raises(ModelError, match="float64"):
        spec_of(net)
    assert issubclass(ModelError, TypeError)


def test_float64_buffer_raises_model_error() -> None:
    net = make_net(0)
    net.bn.running_mean = net.bn.running_mean.double()
    with pytest.raises(ModelError, match=r"bn\.running_mean"):
        spec_of(net)


def test_model_without_parameters_raises() -> None:
    with pytest.raises(ModelError, match="no parameters"):
        spec_of(torch.nn.ReLU())


def test_spec_dict_round_trip() -> None:
    spec = spec_of(make_net(0))
    assert FlatSpec.from_dict(spec.to_dict()) == spec


# ----------------------------------------------------------------------------- FlatBinding
def test_binding_load_changes_module_tensors() -> None:
    net = make_net(0)
    spec = spec_of(net)
    binding = FlatBinding(net, spec).bind("cpu")
    assert binding.weights is not None
    np.testing.assert_array_equal(binding.weights.numpy(), flatten(make_net(0), spec))

    rng = np.random.default_rng(0)
    vec = rng.standard_normal(spec.size).astype(np.float32)
    nbt = next(e for e in spec.entries if e.name == "bn.num_batches_tracked")
    vec[nbt.offset] = 41.0
    rv = next(e for e in spec.entries if e.name == "bn.running_var")
    vec[rv.offset : rv.stop] = np.abs(vec[rv.offset : rv.stop]) + 0.5  # a valid variance
    binding.load(vec)

    tensors = dict(net.named_parameters())
    tensors.update(net.named_buffers())
    for e in spec.entries:
        t = tensors[e.name]
        expected = torch.from_numpy(vec[e.offset : e.stop]).view(e.shape).to(t.dtype)
        assert torch.equal(t.detach(), expected), e.name
    assert net.bn.num_batches_tracked.dtype == torch.int64
    assert int(net.bn.num_batches_tracked) == 41
    # the module really computes with the loaded weights
    reference = make_net(5)
    unflatten_into(reference, spec, vec)
    x = batch(0)[0]
    net.eval()
    reference.eval()
    with torch.no_grad():
        out = net(x)
        assert torch.isfinite(out).all()
        assert torch.equal(out, reference(x))


def test_binding_backward_writes_autograd_gradient_into_grads() -> None:
    net = make_net(0)
    unbound = copy.deepcopy(net)
    spec = spec_of(net)
    binding = FlatBinding(net, spec).bind()
    assert binding.grads is not None
    assert binding.grads.shape == (spec.n_params,)
    assert not binding.grads.any()

    x, y = batch(0)
    loss_of(net, x, y).backward()
    expected = autograd_grad(unbound, [(x, y)])
    assert np.abs(expected).sum() > 0
    np.testing.assert_allclose(binding.grads.numpy(), expected, rtol=1e-6, atol=1e-7)
    # each parameter's .grad is a view of the flat gradient
    for e in spec.entries[:2]:
        p = dict(net.named_parameters())[e.name]
        assert p.grad is not None
        assert p.grad.data_ptr() == binding.grads[e.offset :].data_ptr()


def test_binding_gradients_accumulate_and_zero() -> None:
    net = make_net(0)
    unbound = copy.deepcopy(net)
    spec = spec_of(net)
    binding = FlatBinding(net, spec).bind()
    b1, b2 = batch(1), batch(2)
    loss_of(net, *b1).backward()
    first = binding.grads.numpy().copy()
    loss_of(net, *b2).backward()
    g1 = autograd_grad(copy.deepcopy(unbound), [b1])
    g2 = autograd_grad(copy.deepcopy(unbound), [b2])
    # the forward pass in train mode updated running stats, but gradients do not depend on them
    np.testing.assert_allclose(first, g1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(binding.grads.numpy(), g1 + g2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(binding.grads.numpy(), g2, rtol=1e-3)
    binding.zero_grad()
    assert not binding.grads.any()
    loss_of(net, *b2).backward()
    np.testing.assert_allclose(binding.grads.numpy(), g2, rtol=1e-6, atol=1e-7)


def test_binding_batchnorm_writes_into_flat_weights_and_buffer_vector() -> None:
    net = make_net(0)
    spec = spec_of(net)
    binding = FlatBinding(net, spec).bind()
    before = binding.buffer_vector()
    net.train()
    net(batch(0)[0])
    net(batch(1)[0])
    rm = next(e for e in spec.entries if e.name == "bn.running_mean")
    # running_mean is a view into the flat weights: the forward pass changed them in place
    np.testing.assert_array_equal(
        binding.weights[rm.offset : rm.stop].numpy(), net.bn.running_mean.numpy()
    )
    assert not np.array_equal(net.bn.running_mean.numpy(), np.zeros(4, dtype=np.float32))
    after = binding.buffer_vector()
    assert after.shape == (spec.n_buffers,)
    nbt = next(e for e in spec.entries if e.name == "bn.num_batches_tracked")
    assert before[nbt.offset - spec.n_params] == 0.0
    assert after[nbt.offset - spec.n_params] == 2.0
    np.testing.assert_array_equal(after, flatten(net, spec)[spec.n_params :])


# ----------------------------------------------------------------------------- Layout
def two_group_layout(disc_out: int = 3) -> Layout:
    gen = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    disc = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, disc_out))
    return Layout.of({"generator": spec_of(gen), "discriminator": spec_of(disc)})


def test_layout_two_groups_slices() -> None:
    layout = two_group_layout()
    gen, disc = layout.groups
    assert layout.names == ("generator", "discriminator")
    assert gen.offset == 0
    assert disc.offset == gen.spec.size
    assert layout.size == gen.spec.size + disc.spec.size
    assert gen.params == slice(0, gen.spec.n_params)
    assert gen.buffers == slice(gen.spec.n_params, gen.spec.size)
    assert disc.whole == slice(gen.spec.size, layout.size)
    assert layout.group("discriminator") is disc
    with pytest.raises(KeyError, match="critic"):
        layout.group("critic")


def test_layout_dict_round_trip() -> None:
    layout = two_group_layout()
    d = layout.to_dict()
    import json

    back = Layout.from_dict(json.loads(json.dumps(d)))
    assert back == layout
    back.check_same(layout)  # no error


def test_layout_check_same_names_mismatching_tensor() -> None:
    layout = two_group_layout(disc_out=3)
    other = two_group_layout(disc_out=5)
    with pytest.raises(CheckpointError, match=r"'2\.weight'") as info:
        layout.check_same(other)
    assert "[5, 4]" in str(info.value) and "[3, 4]" in str(info.value)


def test_layout_check_same_group_names_differ() -> None:
    layout = two_group_layout()
    g, d = layout.groups
    other = Layout.of({"generator": g.spec, "critic": d.spec})
    with pytest.raises(CheckpointError, match="critic"):
        layout.check_same(other)


def test_spec_check_same_missing_tensor() -> None:
    a = spec_of(torch.nn.Linear(3, 2))
    b = spec_of(torch.nn.Linear(3, 2, bias=False))
    with pytest.raises(CheckpointError, match="'bias'"):
        a.check_same(b)


# ----------------------------------------------------------------------------- integer buffers
class WithBuffer(torch.nn.Module):
    def __init__(self, buf: torch.Tensor) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.register_buffer("extra", buf)


def test_integer_buffer_exact_up_to_2_pow_24() -> None:
    ok = WithBuffer(torch.tensor([2**24, -(2**24), 7], dtype=torch.int64))
    spec = spec_of(ok)
    flat = flatten(ok, spec)
    np.testing.assert_array_equal(flat[-3:], np.array([2**24, -(2**24), 7], dtype=np.float32))
    dst = WithBuffer(torch.zeros(3, dtype=torch.int64))
    unflatten_into(dst, spec, flat)
    assert dst.extra.tolist() == [2**24, -(2**24), 7]
    too_big = WithBuffer(torch.tensor([2**24 + 1], dtype=torch.int64))
    with pytest.raises(ModelError, match="'extra'"):
        flatten(too_big, spec_of(too_big))


def test_boolean_buffer_round_trips() -> None:
    src = WithBuffer(torch.tensor([True, False, True]))
    spec = spec_of(src)
    flat = flatten(src, spec)
    np.testing.assert_array_equal(flat[-3:], np.array([1, 0, 1], dtype=np.float32))
    dst = WithBuffer(torch.tensor([False, False, False]))
    unflatten_into(dst, spec, flat)
    assert dst.extra.dtype == torch.bool
    assert dst.extra.tolist() == [True, False, True]


def test_step_that_drops_the_grad_views_is_refused():
    """A custom step calling zero_grad() would silently detach gradients from the push vector."""
    from psdist.replica import Replica

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    replica = Replica("w", {"model": model})
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    model.zero_grad()  # set_to_none=True: the views into the flat gradient are gone
    torch.nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(ModelError, match=r"'0.weight' no longer lives in psdist's flat gradient"):
        replica.gradient_update()


# ----------------------------------------------------------------------------- frozen parameters
class PartlyFrozen(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(2, 3)  # 6 + 3
        self.b = torch.nn.Linear(3, 2)  # 6 + 2
        self.c = torch.nn.Linear(2, 1)  # 2 + 1
        self.a.requires_grad_(False)
        self.b.bias.requires_grad_(False)
        self.c.weight.requires_grad_(False)


def test_frozen_ranges_are_merged_and_placed_in_the_layout() -> None:
    spec = spec_of(PartlyFrozen())
    # a.weight + a.bias merge; b.bias and c.weight touch: one range
    assert spec.frozen == ((0, 9), (15, 19)) and spec.n_frozen == 13
    layout = Layout.of({"g": spec_of(torch.nn.Linear(1, 1)), "f": spec})
    f = layout.group("f")
    assert f.frozen == (slice(2, 11), slice(17, 21))
    assert f.frozen_in_params == (slice(0, 9), slice(15, 19))
    assert f.updatable == (slice(11, 17), slice(21, 22))
    assert layout.frozen == f.frozen  # the first group trains everything
    assert Layout.of({"m": spec_of(PartlyFrozen())}).group("m").updatable == (slice(9, 15), slice(19, 20))


def test_old_layout_dicts_without_the_flag_read_as_trainable() -> None:
    """Checkpoints written before the flag (5-field entries) still load: every parameter trains."""
    spec = spec_of(PartlyFrozen())
    assert FlatSpec.from_dict(spec.to_dict()) == spec
    old = {"n_params": spec.n_params, "entries": [row[:5] for row in spec.to_dict()["entries"]]}
    back = FlatSpec.from_dict(old)
    assert back.frozen == () and all(e.trainable for e in back.entries)
    back.check_same(spec)  # freezing differently is no other architecture (fine-tuning)
