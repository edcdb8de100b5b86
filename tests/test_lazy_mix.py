"""A weight-like tensor read per sample as its K kernels (layers/lazy_mix.py): every linear op
it allows equals mixing each sample first, anything else raises, gradients reach the stack,
and an owner reading its table so runs once for the whole batch."""
import pytest
import torch
from conftest import assert_close
from test_owner_split import LAMS, P, Counts, Net, _each_alone, _proofs

from tunify import tunify
from tunify.layers import RowsNotSeparable
from tunify.layers.lazy_mix import LazyMix

K, T, H, N, B, NW = 2, 9, 3, 4, 3, 5


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    stack = torch.randn(K, T, H, generator=g, requires_grad=True)
    coeffs = torch.rand(B, K, generator=g)
    index = torch.randint(0, T, (N * N,), generator=g)
    scores = torch.randn(B * NW, H, N, N, generator=g)  # each sample's NW windows contiguous
    return stack, coeffs, index, scores


def _per_sample(stack, coeffs, read, scores, op):
    """Each sample's own mixture read as ``read`` says, met by its own rows."""
    rows = []
    for b in range(B):
        table = (coeffs[b, :, None, None] * stack).sum(0)
        rows.append(op(scores[b * NW : (b + 1) * NW], read(table)))
    return torch.cat(rows)


READS = {
    "swin": lambda t, i: t[i].view(N, N, -1).permute(2, 0, 1).contiguous().unsqueeze(0),
    "reshape-transpose": lambda t, i: t[i].reshape(N, N, H).transpose(0, 2).transpose(1, 2).unsqueeze(0),
    "flatten-squeeze": lambda t, i: t[i].view(1, N, N, H).permute(0, 3, 1, 2).flatten(2).view(1, H, N, N).squeeze(0).unsqueeze(0),
    "scaled": lambda t, i: (t[i].view(N, N, -1).permute(2, 0, 1) * 0.5).unsqueeze(0),
}
OPS = {
    "scores + table": lambda s, t: s + t,
    "table + scores": lambda s, t: t + s,
    "scores * table": lambda s, t: s * t,
    "table - scores": lambda s, t: t - s,
    "torch.add": lambda s, t: torch.add(s, t),
}


@pytest.mark.parametrize("op", OPS, ids=list(OPS))
@pytest.mark.parametrize("read", READS, ids=list(READS))
def test_linear_reads_equal_mixing_each_sample_first(read, op):
    stack, coeffs, index, scores = _setup()
    lazy = READS[read](LazyMix(stack, coeffs, "table"), index)
    out = OPS[op](scores, lazy)
    ref = _per_sample(stack, coeffs, lambda t: READS[read](t, index), scores, OPS[op])
    assert isinstance(out, torch.Tensor) and out.shape == scores.shape
    assert_close(out, ref, rel=1e-5)
    grad = torch.autograd.grad(out.square().sum(), stack)[0]
    ref_grad = torch.autograd.grad(ref.square().sum(), stack)[0]
    assert grad.abs().sum() > 0
    assert_close(grad, ref_grad, rel=1e-5)


@pytest.mark.parametrize("use", ["exp", "matmul", "plus-one", "repeat"])
def test_a_use_the_kernels_cannot_follow_raises_naming_the_tensor(use):
    stack, coeffs, index, scores = _setup()
    lazy = LazyMix(stack, coeffs, "blocks.0.attn.table")[index].view(N, N, -1).permute(2, 0, 1)
    run = {"exp": lambda: lazy.exp(), "matmul": lambda: torch.matmul(scores, lazy),
           "plus-one": lambda: lazy + 1.0, "repeat": lambda: lazy.repeat(2, 1, 1)}[use]
    with pytest.raises(RowsNotSeparable, match="blocks.0.attn.table read per sample meets"):
        run()


def test_shape_queries_answer_for_one_kernel():
    stack, coeffs, index, _ = _setup()
    lazy = LazyMix(stack, coeffs)[index].view(N, N, -1)
    assert lazy.shape == (N, N, H) and lazy.dim() == lazy.ndim == 3 and lazy.size(-1) == H and len(lazy) == N
    assert lazy.dtype == stack.dtype and lazy.device == stack.device


def test_an_owner_reading_its_table_runs_once_for_the_whole_batch():
    torch.manual_seed(0)
    net = Net()
    net.block.attn = Counts()
    tm = tunify(net.eval(), P).eval()
    x = torch.randn(4, 3, 4, 6)
    with torch.no_grad():
        tm(x, lam=LAMS)  # proves by rows, then the lazy form
        before = tm.model.block.attn.calls.item()
        out = tm(x, lam=LAMS)
        assert tm.model.block.attn.calls.item() == before + 1  # one run, not one per λ row
        assert_close(out, _each_alone(tm, x, LAMS), rel=1e-5)
    assert _proofs(tm, "lazy") == [""] and not tm.split_reasons


def test_rows_that_are_the_samples_meet_their_own_mixture():
    stack, coeffs, index, scores = _setup(seed=3)
    scores = scores[::NW].contiguous()  # (B, H, N, N): one row per sample
    out = scores * READS["swin"](LazyMix(stack, coeffs), index)
    for b in range(B):
        table = (coeffs[b, :, None, None] * stack).sum(0)
        assert_close(out[b : b + 1], scores[b : b + 1] * READS["swin"](table, index), rel=1e-5)


def test_einops_rearranges_and_repeats_the_kernels():
    """Uformer's table: rearranged, then repeated along a new axis (copies: linear)."""
    einops = pytest.importorskip("einops")
    stack, coeffs, index, _ = _setup(seed=4)
    scores = torch.randn(B * NW, H, N, 2 * N)

    def read(t):
        t = einops.rearrange(t[index], "(a b) h -> h a b", a=N)
        return einops.repeat(t, "h l c -> h l (c d)", d=2).unsqueeze(0)

    out = scores + read(LazyMix(stack, coeffs))
    assert_close(out, _per_sample(stack, coeffs, read, scores, lambda s, t: s + t), rel=1e-5)
    with pytest.raises(RowsNotSeparable, match="einops reduce 'max'"):
        einops.reduce(LazyMix(stack, coeffs), "t h -> h", "max")
