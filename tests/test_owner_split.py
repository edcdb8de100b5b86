"""Per-sample λ through modules whose weight-like tensor is indexed (a relative-position bias
table): only that module runs once per distinct λ row, on its own rows, and only where that
was proved exact; otherwise the whole model is split, with the reason in the report."""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, perturb
from torch import nn

from tunify import bake, tunify
from tunify.layers import TunableLayer, TunableParameter, owner_split

P = 2


class WindowAttn(nn.Module):
    """Swin's window attention: x (B·nW, N, C), mask (nW, N, N) or None; the bias table
    (T, heads) is indexed by a buffer and reshaped before it meets the scores."""

    def __init__(self, dim: int = 8, heads: int = 2, window: int = 2, drop: float = 0.0):
        super().__init__()
        self.heads, self.window = heads, window
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b_ // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.heads, n, n)
        attn = self.drop(attn.softmax(-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


def _windows(x, w):  # (B, C, H, W) -> (B·nW, w·w, C), each sample's windows contiguous
    b, c, h, wd = x.shape
    x = x.view(b, c, h // w, w, wd // w, w).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, w * w, c)


def _unwindows(t, b, c, h, wd, w):
    t = t.view(b, h // w, wd // w, w, w, c).permute(0, 5, 1, 3, 2, 4)
    return t.reshape(b, c, h, wd)


class Block(nn.Module):
    """conv → window attention (masked) → conv; the shape check keeps it off the fx graph."""

    def __init__(self, dim: int = 8, window: int = 2, drop: float = 0.0):
        super().__init__()
        self.window = window
        self.attn = WindowAttn(dim, window=window, drop=drop)

    def forward(self, y):
        b, c, h, wd = y.shape
        if h % self.window:  # untraceable (a shape test): this block is kept whole
            y = F.pad(y, (0, 0, 0, self.window - h % self.window))
        nw = (h // self.window) * (wd // self.window)
        mask = torch.zeros(nw, self.window ** 2, self.window ** 2)
        mask[::2, 0, 1:] = -100.0  # a mask that matters, passed whole: its leading axis is nW
        out = self.attn(_windows(y, self.window), mask=mask)
        return y + _unwindows(out, b, c, h, wd, self.window)


class Net(nn.Module):
    def __init__(self, dim: int = 8, window: int = 2, drop: float = 0.0):
        super().__init__()
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.block = Block(dim, window, drop)
        self.tail = nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(torch.relu(self.block(self.head(x))))


LAMS = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])


def _close(actual, expected, atol: float = 1e-5):
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def _each_alone(tm, x, lam):
    return torch.cat([tm(x[i : i + 1], lam=lam[i]) for i in range(x.shape[0])])


def _owner_rows(tm) -> bool:
    return tm.tunify_report.per_sample.startswith("native, except") and not tm.split_reasons


def _vmap_proofs(tm) -> list:
    return [v for k, v in tm.__dict__.get("_row_proofs", {}).items() if k[0] == "vmap"]


def _no(name: str, monkeypatch) -> None:
    """A one-pass form made to fail, as for a forward that cannot take it."""
    monkeypatch.setattr(owner_split, name, lambda *a, **k: (_ for _ in ()).throw(RuntimeError(f"no {name}")))


def _proofs(tm, kind: str) -> list:
    return [v for k, v in tm.__dict__.get("_row_proofs", {}).items() if k[0] == kind]


@pytest.mark.parametrize("how", ["lazy", "vmap", "by-rows"])
@pytest.mark.parametrize("mode", ["auto", "module"])
def test_owner_runs_by_rows_and_equals_each_sample_alone(mode, how, monkeypatch):
    if how != "lazy":  # as for a table read the kernels cannot follow one at a time
        _no("run_lazy", monkeypatch)
    if how == "by-rows":  # as for a forward that vmap cannot run
        _no("run_vmapped", monkeypatch)
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(4, 3, 4, 6)
    tm = tunify(model, P, mode=mode).eval()
    assert tm.tunify_report.path == ("fx" if mode == "auto" else "module")
    assert _owner_rows(tm) and "table" in tm.tunify_report.per_sample and "WindowAttn" in tm.tunify_report.per_sample
    with torch.no_grad():
        assert_close(tm(x, lam=LAMS), model(x), rel=1e-5)  # at init every λ is the original
        perturb(tm, seed=1)
        a, b = tm(x, lam=[1.0, 0.0]), tm(x, lam=[0.0, 1.0])
        assert (a - b).abs().max() > 1e-2 * a.abs().max()  # λ matters, so a routing bug would show
        out = tm(x, lam=LAMS)
        _close(out, _each_alone(tm, x, LAMS))
        # repeated rows group: samples 0 and 2 share a row, out of order
        lam = LAMS[[0, 1, 0, 3]]
        _close(tm(x, lam=lam), _each_alone(tm, x, lam), atol=1e-5)
    assert _owner_rows(tm), tm.tunify_report.per_sample  # proved, not fallen back
    assert "forward" not in tm.model.block.attn.__dict__  # nothing left behind
    lazy, vmapped = _proofs(tm, "lazy"), _vmap_proofs(tm)
    assert lazy and all((p == "") == (how == "lazy") for p in lazy), lazy
    assert how == "lazy" and not vmapped or vmapped and all((p == "") == (how == "vmap") for p in vmapped), vmapped


def test_gradients_reach_every_kernel_through_the_owner():
    torch.manual_seed(0)
    tm = tunify(Net(), P)
    with torch.no_grad():
        perturb(tm, seed=2)
    x = torch.randn(3, 3, 4, 4)
    tm(x, lam=LAMS[:3]).square().mean().backward()
    assert _owner_rows(tm)
    stacks = [(n, p) for m in tm.modules() if isinstance(m, TunableLayer) for n, p in m.named_parameters(recurse=False)]
    stacks.append(("table", tm.model.block.attn.parametrizations.table.original))
    for name, p in stacks:
        assert p.grad is not None and (p.grad.reshape(p.shape[0], -1).abs().sum(1) > 0).all(), name


def test_bake_deepcopy_and_state_dict_after_per_sample_calls():
    torch.manual_seed(0)
    model = Net().eval()
    tm = tunify(model, P).eval()
    keys = list(tm.state_dict())
    x = torch.randn(4, 3, 4, 4)
    with torch.no_grad():
        perturb(tm, seed=3)
        out = tm(x, lam=LAMS)
        assert list(tm.state_dict()) == keys and type(tm.model.block.attn).__name__ == "ParametrizedWindowAttn"
        twin = copy.deepcopy(tm)
        assert twin.model.block.attn is not tm.model.block.attn
        _close(twin(x, lam=LAMS), out, atol=1e-6)
        with torch.no_grad():  # the copy's owners are its own: changing it leaves tm alone
            twin.model.block.attn.parametrizations.table.original.add_(torch.randn(2, 9, 2))  # (a constant would cancel in the softmax)
        _close(tm(x, lam=LAMS), out, atol=1e-6)
        assert not torch.allclose(twin(x, lam=LAMS), out, atol=1e-4)
        plain = bake(tm, LAMS[1])
        assert type(plain.block.attn) is WindowAttn and "forward" not in plain.block.attn.__dict__
        _close(plain(x[1:2]), out[1:2], atol=1e-5)


def test_dropout_in_the_owner_does_not_block_the_proof():
    torch.manual_seed(0)
    tm = tunify(Net(drop=0.5), P).train()
    # rows 0 and 2 share λ: the groups run out of sample order, so unless the proof switches
    # dropout off, its masks could not match the whole run's
    tm(torch.randn(3, 3, 4, 4), lam=LAMS[[0, 1, 0]]).mean().backward()
    assert _owner_rows(tm), tm.tunify_report.per_sample


class MixesRows(WindowAttn):
    """Adds the mean over the leading axis: running it on part of the rows changes the result."""

    def forward(self, x, mask=None):
        y = super().forward(x, mask)
        return y + y.mean(0, keepdim=True)


class Gain(nn.Module):
    """t * table, elementwise: rows are independent whatever the layout of t."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.table = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, t):
        return t * self.table


class SequenceFirst(nn.Module):
    """Hands its owner (L, B, C) activations: the leading axis is not the batch."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 1)
        self.gain = Gain()
        self.tail = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        y = self.head(x)
        b, c, h, w = y.shape
        t = y.flatten(2).permute(2, 0, 1)  # (H·W, B, C)
        if t.shape[0] < 0:
            return y  # untraceable: the module path
        return self.tail(self.gain(t).permute(1, 2, 0).reshape(b, c, h, w))


class ReadsChildTable(nn.Module):
    """The parent reads its child's table: the owner is not where the tensor is used."""

    def __init__(self):
        super().__init__()
        self.attn = WindowAttn()
        self.head = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = self.head(x)
        if y.shape[0] < 0:
            return y
        return y + self.attn.table.sum()


def _falls_back(model, x, words):
    torch.manual_seed(0)
    model.eval()
    tm = tunify(model, P, mode="module").eval()
    assert _owner_rows(tm)
    with torch.no_grad():
        perturb(tm, seed=4)
        lam = LAMS[: x.shape[0]]
        out = tm(x, lam=lam)
        assert tm.split_reasons and words in tm.split_reasons[-1], tm.split_reasons
        assert tm.tunify_report.per_sample.startswith("exact, by running each distinct λ row")
        _close(out, _each_alone(tm, x, lam), atol=1e-5)
        _close(tm(x, lam=lam), out, atol=1e-6)  # later calls take the whole split directly
    return tm


def test_owner_that_mixes_rows_falls_back_to_the_whole_model_split():
    net = Net()
    net.block.attn = MixesRows()
    tm = _falls_back(net, torch.randn(3, 3, 4, 4), "does not treat the rows of its input independently")
    assert "forward" not in tm.model.block.attn.__dict__


def test_leading_axis_not_a_multiple_of_the_batch_falls_back():
    _falls_back(SequenceFirst(), torch.randn(2, 3, 1, 3), "not a multiple")  # L = 3, B = 2


def test_sequence_first_owner_is_caught_by_the_routing_check():
    # L = 4 is a multiple of B = 2: by rows would give sample 0 the first two positions of
    # both samples. Rows are independent, so only a check with distinct kernels can see it;
    # tunify(example_inputs=...) runs one and the model splits whole instead.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 2)
    tm = tunify(SequenceFirst().eval(), P, mode="module", example_inputs=x).eval()
    assert tm.split_reasons and "differed from running each λ row alone" in tm.split_reasons[-1]
    with torch.no_grad():
        perturb(tm, seed=6)
        _close(tm(x, lam=LAMS[:2]), _each_alone(tm, x, LAMS[:2]))


def test_tensor_read_outside_its_owner_falls_back():
    _falls_back(ReadsChildTable(), torch.randn(2, 3, 4, 4), "outside the module that owns it")


class IndexArg(WindowAttn):
    """HAT passes its relative-position index as an argument: (N, N), not row-aligned."""

    def forward(self, x, rpi=None, mask=None):
        b_, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.table[rpi.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class IndexNet(Net):
    def __init__(self):
        super().__init__(window=4)
        self.block.attn = IndexArg(window=4)

    def forward(self, x):
        y = self.head(x)
        b, c, h, w = y.shape
        if h % 4:
            return y
        out = self.block.attn(_windows(y, 4), rpi=self.block.attn.index)
        return self.tail(y + _unwindows(out, b, c, h, w, 4))


def test_argument_that_only_looks_row_aligned_is_proved_not_trusted():
    # window 4 (N = 16) on 8x8 images at B = 4: 16 windows, as many rows as the index has
    _falls_back(IndexNet(), torch.randn(4, 3, 8, 8), "cannot run on part of its rows")
    with torch.no_grad():  # at another size the index is no longer mistaken for rows
        tm2 = tunify(IndexNet().eval(), P, mode="module").eval()
        perturb(tm2, seed=5)
        x = torch.randn(2, 3, 8, 8)
        _close(tm2(x, lam=LAMS[:2]), _each_alone(tm2, x, LAMS[:2]), atol=1e-5)
        assert _owner_rows(tm2)


def test_example_inputs_check_routing_through_owners():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 4, 4)
    tm = tunify(Net().eval(), P, example_inputs=x)
    assert _owner_rows(tm)
    tp = tm.model.block.attn.parametrizations.table[0]
    assert isinstance(tp, TunableParameter) and tp.per_sample == "rows"


class Counts(WindowAttn):
    """Counts its calls in a buffer, as BatchNorm counts batches: a proof must leave no trace.
    Its ``.item()`` cannot run under vmap, so without the lazy form it runs by rows (once per
    distinct λ row)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x, mask=None):
        self.calls += 1
        if x.abs().max().item() < 0:
            return x
        return super().forward(x, mask)


class WithBatchStats(WindowAttn):
    """BatchNorm over the windows in training: its statistics mix the rows."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x, mask=None):
        return self.norm(super().forward(x, mask))


def test_proof_in_training_leaves_buffers_as_the_group_runs_made_them(monkeypatch):
    _no("run_lazy", monkeypatch)  # by rows, as below
    net = Net()
    net.block.attn = Counts()
    tm = tunify(net, P).train()
    tm(torch.randn(3, 3, 4, 4), lam=LAMS[[0, 1, 0]])  # two distinct λ rows: two runs of the owner
    assert _owner_rows(tm) and tm.model.block.attn.calls.item() == 2


def test_batchnorm_in_training_falls_back_and_eval_runs_by_rows():
    torch.manual_seed(0)
    net = Net()
    net.block.attn = WithBatchStats()
    tm = tunify(net, P).train()
    x = torch.randn(3, 3, 4, 4)
    tm(x, lam=LAMS[:3])
    assert tm.split_reasons and "does not treat the rows" in tm.split_reasons[-1]
    net = Net()
    net.block.attn = WithBatchStats()
    tm = tunify(net.eval(), P).eval()  # running statistics: the rows are independent
    with torch.no_grad():
        perturb(tm, seed=7)
        _close(tm(x, lam=LAMS[:3]), _each_alone(tm, x, LAMS[:3]))
    assert _owner_rows(tm)


class PosBias(nn.Module):
    """DAT's DynamicPosBias: tunable linears on a (L, 2) grid that has no batch axis."""

    def __init__(self, heads: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(2, 8)
        self.fc2 = nn.Linear(8, heads)

    def forward(self, grid):
        return self.fc2(torch.relu(self.fc1(grid)))  # (L, heads): a bias table made by layers


class PosAttn(WindowAttn):
    def __init__(self):
        super().__init__()
        del self.table
        self.pos = PosBias()
        w = self.window
        g = torch.arange(1 - w, w, dtype=torch.float32)
        self.register_buffer("grid", torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2), persistent=False)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.pos(self.grid)[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Reader(nn.Module):
    """HVICIDNet's way: a (non-root) module reads its child's tensor."""

    def __init__(self):
        super().__init__()
        self.attn = WindowAttn()

    def forward(self, y):
        return y * self.attn.table.mean() + y


class ReaderNet(Net):
    def __init__(self):
        super().__init__()
        self.reader = Reader()

    def forward(self, x):
        y = self.block(self.head(x))
        if y.shape[0] < 0:
            return y
        return self.tail(self.reader(y))


@pytest.mark.parametrize("make, name", [(lambda: _with_attn(PosAttn()), "block.attn"), (ReaderNet, "reader")],
                         ids=["layers-build-the-table", "parent-reads-the-table"])
def test_owner_found_at_run_time(make, name):
    torch.manual_seed(0)
    tm = tunify(make().eval(), P, mode="module").eval()
    x = torch.randn(2, 3, 4, 4)  # the grid has 9 rows: no multiple of B = 2
    with torch.no_grad():
        perturb(tm, seed=8)
        out = tm(x, lam=LAMS[:2])
        assert not tm.split_reasons and f"found at run time, where per-sample kernels could not follow: {name}" \
            in tm.tunify_report.per_sample, (tm.split_reasons, tm.tunify_report.per_sample)
        _close(out, _each_alone(tm, x, LAMS[:2]))
        _close(tm(x, lam=LAMS[:2]), out, atol=1e-6)  # the next call goes straight to it
    tm.train()
    tm(x, lam=LAMS[:2]).square().mean().backward()
    used = [(n, p) for n, p in tm.named_parameters() if n.endswith((".weights", ".original"))
            and not n.startswith(("model.reader.attn.qkv", "model.reader.attn.proj"))]  # never called
    assert len(used) >= 5
    for n, p in used:
        assert p.grad is not None and (p.grad.flatten(1).abs().sum(1) > 0).all(), n


def _with_attn(attn):
    net = Net()
    net.block.attn = attn
    return net


class Temp(nn.Module):
    """FDAT's channel attention, traced: scores (B, heads, d, d) * temp (heads, 1, 1), a tensor
    with no leading 1 that broadcasting right-aligns; ``same_dims`` multiplies it into a
    (heads·B, d, d) view instead, where no axis of it can carry the sample."""

    def __init__(self, same_dims: bool = False):
        super().__init__()
        self.qkv = nn.Conv2d(4, 12, 1)
        self.temp = nn.Parameter(torch.linspace(0.5, 1.5, 2).reshape(2, 1, 1))
        self.same_dims = same_dims

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, 2, c // 2, h * w).unbind(1)
        scores = q @ k.transpose(-2, -1)                      # (B, heads, d, d)
        if self.same_dims:
            scores = (scores.reshape(-1, c // 2, c // 2) * self.temp).reshape(b, 2, c // 2, c // 2)
        else:
            scores = scores * self.temp
        return (scores.softmax(-1) @ v).reshape(b, c, h, w)


def test_tensor_without_a_leading_one_goes_per_sample_in_the_graph():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 3, 3)
    tm = tunify(Temp().eval(), P).eval()
    assert tm.tunify_report.path == "fx" and tm.tunify_report.per_sample == "native", tm.tunify_report.per_sample
    with torch.no_grad():
        perturb(tm, seed=9)
        _close(tm(x, lam=LAMS[:3]), _each_alone(tm, x, LAMS[:3]))
    assert not tm.split_reasons
    tm2 = tunify(Temp(same_dims=True).eval(), P).eval()
    with torch.no_grad():
        perturb(tm2, seed=9)
        _close(tm2(x, lam=LAMS[:3]), _each_alone(tm2, x, LAMS[:3]))
    assert tm2.split_reasons and "leaves it no axis to meet the batch" in tm2.split_reasons[-1], tm2.split_reasons


class WeightReader(nn.Module):
    """Calls F.conv2d with its conv's .weight: one tensor read while λ is per sample."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, y):
        return F.conv2d(y, self.conv.weight, self.conv.bias, padding=1)


class ReadsWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)
        self.reader = WeightReader()

    def forward(self, x):
        y = self.head(x)
        if y.shape[0] < 0:
            return y  # untraceable: the module path, where the read happens in the reader's forward
        return self.reader(y)


def test_layer_weight_read_makes_the_reader_an_owner():
    torch.manual_seed(0)
    tm = tunify(ReadsWeight().eval(), P).eval()
    x = torch.randn(3, 3, 5, 5)
    with torch.no_grad():
        perturb(tm, seed=10)
        _close(tm(x, lam=LAMS[:3]), _each_alone(tm, x, LAMS[:3]))
    assert not tm.split_reasons and "found at run time, where per-sample kernels could not follow: reader" \
        in tm.tunify_report.per_sample, (tm.split_reasons, tm.tunify_report.per_sample)


class _TableMatmul(torch.autograd.Function):
    """x (B, L, n) @ table (1 or B, n, c) with a hand-written backward, as KBNet's KBA: vmap
    cannot enter it, but one value per sample on the table's leading axis of 1 can."""

    @staticmethod
    def forward(ctx, x, table):
        ctx.save_for_backward(x, table)
        return x @ table

    @staticmethod
    def backward(ctx, grad):
        x, table = ctx.saved_tensors
        g = x.transpose(-2, -1) @ grad  # (B, n, c)
        return grad @ table.transpose(-2, -1), g.sum(0, keepdim=True) if table.shape[0] == 1 else g


class TableBlock(nn.Module):
    def __init__(self, n: int = 4, c: int = 6):
        super().__init__()
        self.att = nn.Conv2d(c, n, 1)
        self.table = nn.Parameter(torch.randn(1, n, c) * 0.5)

    def forward(self, y):
        b, c, h, w = y.shape
        if h < 0:
            return y  # untraceable: kept whole, the table read in this forward
        att = self.att(y).flatten(2).transpose(1, 2)  # (B, HW, n)
        return y + _TableMatmul.apply(att, self.table).transpose(1, 2).reshape(b, c, h, w)


class TableNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.head, self.block, self.tail = nn.Conv2d(3, 6, 3, padding=1), TableBlock(), nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return self.tail(self.block(self.head(x)))


def test_a_table_with_a_leading_one_takes_one_value_per_sample_in_one_run():
    torch.manual_seed(0)
    tm = tunify(TableNet().eval(), P).eval()
    assert _owner_rows(tm)
    calls = []
    tm.model.block.att.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        perturb(tm, seed=11)
        out = tm(x, lam=LAMS)  # proofs: by rows, then the broadcast form against it
        calls.clear()
        _close(tm(x, lam=LAMS), out)
        assert calls == [4]  # one run of the owner for the whole batch: neither vmap nor by rows
        _close(out, _each_alone(tm, x, LAMS))
    proofs = {k[0]: v for k, v in tm.__dict__["_row_proofs"].items() if k[0] in ("broadcast", "vmap")}
    assert proofs == {"broadcast": ""}, proofs
    tm.train()
    tm(x, lam=LAMS).square().mean().backward()  # the custom backward gets the (B, n, c) table
    grad = tm.model.block.parametrizations.table.original.grad
    assert grad is not None and (grad.flatten(1).abs().sum(1) > 0).all()


def test_the_broadcast_form_is_not_tried_where_windows_fold_into_the_batch():
    torch.manual_seed(0)
    tm = tunify(Net(), P).eval()  # WindowAttn's (T, heads) table; here rows are B·nW anyway
    with torch.no_grad():
        perturb(tm, seed=12)
        x = torch.randn(4, 3, 4, 6)
        _close(tm(x, lam=LAMS), _each_alone(tm, x, LAMS))
    proofs = [v for k, v in tm.__dict__["_row_proofs"].items() if k[0] == "broadcast"]
    assert proofs and all("cannot take one value per sample" in p for p in proofs), proofs


class DropPathNet(Net):
    """Net with stochastic depth after its kept-whole block, as SwinIR's blocks have."""

    def __init__(self):
        super().__init__()
        from timm.layers import DropPath

        self.drop_path = DropPath(0.5)

    def forward(self, x):
        y = self.head(x)
        return self.tail(torch.relu(y + self.drop_path(self.block(y))))


def test_stochastic_depth_in_training_does_not_fail_the_proofs():
    """The proofs draw no masks: a batch and its parts would draw different ones, and the
    model would run each λ row alone from the first training step on."""
    torch.manual_seed(0)
    tm = tunify(DropPathNet(), P).train()
    with torch.no_grad():
        perturb(tm, seed=13)
    # samples 0 and 2 share a row: by rows draws their masks in another order than the batch
    tm(torch.randn(4, 3, 4, 6), lam=LAMS[[0, 1, 0, 3]]).square().mean().backward()
    assert _owner_rows(tm), (tm.split_reasons, tm.tunify_report.per_sample)
    assert tm.model.drop_path.training  # switched off for the proofs only


class _PairAttn(WindowAttn):
    def forward(self, x, mask=None):  # (out, None, n): what GFPGAN's decoder returns, and a number
        return super().forward(x, mask), None, x.shape[1]


class _PairBlock(Block):
    def __init__(self):
        super().__init__()
        self.attn = _PairAttn(8, window=2)

    def forward(self, y):
        b, c, h, wd = y.shape
        if h % self.window:
            y = F.pad(y, (0, 0, 0, self.window - h % self.window))
        out, none, n = self.attn(_windows(y, self.window))
        assert none is None and n == self.window ** 2
        return y + _unwindows(out, b, c, h, wd, self.window)


def test_an_owner_returning_none_and_numbers_is_vmapped(monkeypatch):
    _no("run_lazy", monkeypatch)
    torch.manual_seed(0)
    model = Net()
    model.block = _PairBlock()
    tm = tunify(model.eval(), P).eval()
    perturb(tm, seed=1)
    x = torch.randn(4, 3, 4, 6)
    with torch.no_grad():
        _close(tm(x, lam=LAMS), _each_alone(tm, x, LAMS))
    assert _owner_rows(tm) and _vmap_proofs(tm) == [""]
