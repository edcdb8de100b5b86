"""Forward code the rewriter once got wrong without raising, one minimal model per class:
each must come out exact (or fall back exactly, with the reason in the report), and the
guard must name the layer when something else goes wrong."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, perturb
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm, weight_norm

from tunify import bake, tunify
from tunify.layers import TunableLayer, TunableWeightNormConv2d
from tunify.surgery.guard import ConversionMismatch

LAMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])


def _check_tunable(model: nn.Module, x, rel: float = 1e-5, **kw):
    """Equal at init (shared and per-sample λ); after perturbing, λ matters, rows equal
    separate runs, bake equals the tunable model with the original's types, every stack gets
    a gradient. Returns the tunable model."""
    args = x if isinstance(x, tuple) else (x,)
    model.eval()
    with torch.no_grad():
        ref = model(*[a.clone() for a in args])
        tm = tunify(model, 2, example_inputs=args, **kw).eval()
        for lam in ([0.3, 0.7], LAMS[: args[0].shape[0]]):
            assert_close(tm(*[a.clone() for a in args], lam=lam), ref, rel=rel)
        perturb(tm, seed=1)
        a, b = tm(*args, lam=[1.0, 0.0]), tm(*args, lam=[0.0, 1.0])
        assert (a - b).abs().max() > 1e-3 * a.abs().max()
        out = tm(*args, lam=LAMS[: args[0].shape[0]])
        for i in range(args[0].shape[0]):
            assert_close(out[i : i + 1], tm(*[t[i : i + 1] for t in args], lam=LAMS[i]), rel=1e-4)
        plain = bake(tm, [0.3, 0.7])
        assert sorted(type(m).__name__ for m in plain.modules()) == sorted(type(m).__name__ for m in model.modules())
        assert_close(plain(*args), tm(*args, lam=[0.3, 0.7]), rel=1e-4)
    tm.train()  # eval forwards of re-parameterised blocks detach their branches, as the original does
    tm(*args, lam=LAMS[: args[0].shape[0]]).pow(2).mean().backward()
    for module in tm.modules():
        if isinstance(module, TunableLayer):
            for name, p in module.named_parameters(recurse=False):
                assert p.grad is not None and (p.grad.reshape(p.shape[0], -1).abs().sum(1) > 0).all(), name
    return tm


# -- a forward that writes a layer's weight (re-parameterised blocks in eval mode) -------------
def _tunified(cls, **kw) -> nn.Module:
    """``cls()`` made tunable (p=2) in eval mode, its kernels perturbed so that routing shows."""
    torch.manual_seed(0)
    tm = tunify(cls(), 2, **kw).eval()
    perturb(tm, seed=1)
    return tm


@torch.no_grad()
def _rows_are_separate_runs(tm: nn.Module, out: torch.Tensor, x: torch.Tensor, lams: torch.Tensor) -> None:
    """Each row of the per-sample output ``out`` equals its sample run alone at its own λ."""
    for i in range(x.shape[0]):
        assert_close(out[i : i + 1].detach(), tm(x[i : i + 1], lam=lams[i]), rel=1e-5)


LAMS4 = torch.cat([LAMS, torch.tensor([[0.6, 0.4]])])


class Reparam(nn.Module):
    """Eval forward rebuilds `fused` from two branches, as SPAN's Conv3XC does."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.fused = nn.Conv2d(4, 4, 3, padding=1)
        self.inplace = inplace
        self.head = nn.Conv2d(4, 4, 1)

    def update(self):
        w = self.a.weight.data.clone() + F.pad(self.b.weight.data, [1, 1, 1, 1])
        if self.inplace:
            self.fused.weight.copy_(w)
            self.fused.bias.copy_(self.a.bias + self.b.bias)
        else:
            self.fused.weight.data = w
            self.fused.bias.data = self.a.bias.data + self.b.bias.data

    def forward(self, x):
        if self.training:
            y = self.a(x) + self.b(x)
        else:
            with torch.no_grad():
                self.update()
            y = self.fused(x)
        return self.head(torch.relu(y))


@pytest.mark.parametrize("inplace", [False, True], ids=["data=", "copy_"])
def test_forward_that_writes_a_weight_stays_exact(inplace):
    tm = _check_tunable(Reparam(inplace), torch.randn(3, 4, 8, 8))
    skipped = {s.name: s.reason for s in tm.tunify_report.skipped}
    assert "Reparam.update" in skipped["fused"]
    assert "writes fused" in tm.tunify_report.per_sample
    # per-sample λ ran the unfused branch natively (one forward), proved against the rows
    assert "unfused training branch" in tm.tunify_report.per_sample and not tm.split_reasons
    # the written weight follows λ: the branches' kernels decide the output in eval mode
    with torch.no_grad():
        x = torch.randn(1, 4, 8, 8)
        tm.model.a.weights[1].add_(1.0)
        assert not torch.allclose(tm(x, lam=[1.0, 0.0]), tm(x, lam=[0.0, 1.0]))


class Unequal(Reparam):
    """A fused branch that is not its training branch (a gain only eval applies)."""

    def forward(self, x):
        return super().forward(x) * (1.0 if self.training else 1.5)


@torch.no_grad()
def test_an_unfused_branch_unlike_the_fused_one_runs_by_rows():
    tm = _tunified(Unequal)
    calls = []
    tm.model.head.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    x = torch.randn(4, 4, 8, 8)
    out = tm(x, lam=LAMS4)
    assert tm.split_reasons and "ran unfused" in tm.split_reasons[-1]
    assert "by running each distinct λ row" in tm.tunify_report.per_sample
    _rows_are_separate_runs(tm, out, x, LAMS4)
    calls.clear()
    tm(x, lam=LAMS4)
    assert calls == [1, 1, 1, 1]  # each λ row alone on the fused branch from now on


def test_unfused_writers_keep_their_childrens_modes_and_restore_their_flag():
    model = nn.Sequential(Reparam(), nn.Dropout(0.5)).eval()
    tm = tunify(model, 2).eval()
    seen = []
    tm.model[0].b.register_forward_hook(lambda m, i, o: seen.append((tm.model[0].training, m.training)))
    with torch.no_grad():
        tm(torch.randn(2, 4, 8, 8), lam=LAMS[:2])
    assert (True, False) in seen  # the writer on its training branch, its child still in eval
    assert not any(m.training for m in tm.modules())


# -- a forward that reads self.training (stochastic depth, train-only branches) -----------------
class Stochastic(nn.Module):
    """DropPath on a residual branch, and a gate that exists only in training."""

    def __init__(self):
        super().__init__()
        from timm.layers import DropPath

        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
        self.drop_path, self.gate = DropPath(0.5), Gate()

    def forward(self, x):
        return self.b(self.gate(x + self.drop_path(self.a(x))))


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return x + self.conv(x) if self.training else x


class ReadsItsMode(Stochastic):
    def forward(self, x):
        return super().forward(x) * (2.0 if self.training else 1.0)


@pytest.mark.parametrize("converted_in", ["train", "eval"])
def test_a_forward_that_reads_its_training_flag_follows_the_mode(converted_in):
    torch.manual_seed(0)
    model = Stochastic().train(converted_in == "train")
    tm = tunify(model, 2)
    assert tm.tunify_report.path == "fx" and not tm.tunify_report.leaves
    # one graph per mode, each for the flags the forward consulted (drop path and gate)
    assert [sorted(type(m).__name__ for m, _ in modes) for _, modes in tm._graphs] == [["DropPath", "Gate"]] * 2
    x = torch.randn(4, 3, 6, 6)
    for mode in (False, True, False):
        model.train(mode), tm.train(mode)
        with torch.no_grad():
            torch.manual_seed(1)
            ref = model(x)
            for lam in ([0.3, 0.7], LAMS4):
                torch.manual_seed(1)
                assert_close(tm(x, lam=lam), ref, rel=1e-5)  # the same paths dropped, the same gate


def test_a_root_that_reads_its_mode_and_a_mix_of_flags_no_graph_holds():
    torch.manual_seed(0)
    model = ReadsItsMode()
    tm = tunify(model, 2)
    assert tm.tunify_report.path == "fx" and len(tm._graphs) == 2
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        for mode in (False, True, "mixed"):
            model.train(mode is not False), tm.train(mode is not False)
            if mode == "mixed":  # the root in training, its gate in eval: neither graph; the module path
                model.gate.eval(), tm.model.gate.eval()
                assert tm._graph is None
            for lam in ([0.5, 0.5], LAMS4):
                torch.manual_seed(2)
                ref = model(x)
                torch.manual_seed(2)
                assert_close(tm(x, lam=lam), ref, rel=1e-5)


# -- forward arguments with defaults -----------------------------------------------------------
class Defaults(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x, mode=None, degrees=(None, None)):
        if mode is None:
            x = self.a(x)
        if degrees[0] is None:
            x = x * 2
        return self.b(x) if mode != "skip_b" else x


def test_forward_defaults_are_traced_at_their_values():
    m = Defaults().eval()
    x = torch.randn(3, 3, 6, 6)
    tm = _check_tunable(m, x)
    assert tm.tunify_report.path == "fx"
    with torch.no_grad():  # a call that gives a defaulted argument runs the module path, still exact
        fresh = tunify(m, 2)
        assert_close(fresh(x, "skip_b", lam=LAMS), m(x, "skip_b"))
        assert_close(fresh(x, mode="other", lam=[0.5, 0.5]), m(x, mode="other"))


# -- forward(self, x, **kwargs) ----------------------------------------------------------------
class VarKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, **kwargs):
        return self.conv(x) + x


def test_var_keyword_forward_traces():
    tm = _check_tunable(VarKeyword(), torch.randn(3, 3, 6, 6))
    assert tm.tunify_report.path == "fx"


# -- weight-like tensors with a leading 1 that is not the batch ------------------------------
class Temperature(nn.Module):
    """A (1, 1, 1) temperature over (B, heads, N, N) attention (DITN), and a (1, 1, 1) one over
    windows folded into the batch (B·nW, N, N)."""

    def __init__(self, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(4, 12)
        self.temperature = nn.Parameter(torch.full((1, 1, 1), 1.5))
        self.window_temperature = nn.Parameter(torch.full((1, 1, 1), 0.7))
        self.proj = nn.Linear(4, 4)

    def forward(self, x):  # x (B, N, C)
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.temperature       # (B, h, N, N) · (1, 1, 1)
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        w = y.reshape(b * 2, n // 2, c)                              # windows into the batch
        w = torch.softmax(w @ w.transpose(1, 2) * self.window_temperature, -1) @ w
        return self.proj(w.reshape(b, n, c))


def test_leading_one_that_is_not_the_batch():
    tm = _check_tunable(Temperature(heads=3 - 1), torch.randn(3, 6, 4))
    assert tm.tunify_report.path == "fx"
    assert "temperature" in tm.tunify_report.names() and tm.tunify_report.per_sample == "native"


def test_leading_one_on_the_module_path():
    class Branchy(Temperature):
        def forward(self, x):
            if bool(x.sum() > -1e9):  # untraceable: module path
                return super().forward(x)
            return x

    tm = _check_tunable(Branchy(heads=2), torch.randn(2, 6, 4))  # heads == B: a broadcast would pass silently
    assert tm.tunify_report.path == "module" and "temperature" in tm.tunify_report.per_sample


# -- a weight-like tensor reshaped before it meets the activation -------------------------------
class LayerScale(nn.Module):
    """ConvNeXt's ``x.mul(gamma.reshape(1, -1, 1, 1))`` with γ (C,), a ``* g.view(1, -1, 1, 1)``
    and, with ``leading=False``, a ``reshape(-1, 1, 1)`` that leaves no axis for the sample."""

    def __init__(self, leading: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 4))
        self.g = nn.Parameter(torch.linspace(-1.0, 1.0, 4))
        self.leading = leading

    def forward(self, x):
        y = self.conv(x)
        if self.leading:
            y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        else:
            y = y.mul(self.gamma.reshape(-1, 1, 1))
        return y + torch.tanh(y) * self.g.view(1, -1, 1, 1)


def test_reshaped_layer_scale_mixes_before_the_reshape():
    tm = _check_tunable(LayerScale(), torch.randn(3, 3, 8, 8), targets=["conv", "gamma", "g"])
    assert tm.tunify_report.per_sample == "native" and {"gamma", "g"} <= set(tm.tunify_report.names())


def test_reshape_without_a_leading_one_splits_rows():
    tm = _check_tunable(LayerScale(leading=False), torch.randn(3, 3, 8, 8), targets=["conv", "gamma", "g"])
    assert any("gamma" in r for r in tm.split_reasons) and not any(r.startswith("g ") for r in tm.split_reasons)


# -- sequence-first activations ----------------------------------------------------------------
class SequenceFirst(nn.Module):
    """A transformer block on (L, B, C) with its feed-forward linears after the attention."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2)      # batch_first=False
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):  # x (B, L, C)
        t = x.transpose(0, 1)                        # (L, B, C)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.fc2(torch.relu(self.fc1(t)))
        return t.transpose(0, 1)


def test_sequence_first_linears_split_rows():
    tm = _check_tunable(SequenceFirst(), torch.randn(3, 6, 4))  # L = 6 is a multiple of B = 3
    assert "sequence-first" in tm.tunify_report.per_sample


# -- a tunable layer on a tensor with no batch axis -----------------------------------------------
class BatchFree(nn.Module):
    """A fixed table through a tunable linear, broadcast over the batch: its 8 rows are not
    samples, and 8 divides by B = 4, so per-sample kernels would mix them without raising."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.randn(8, 6))
        self.fc = nn.Linear(6, 6)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + self.fc(self.table).mean(0)[None, :, None, None]


def test_a_layer_on_a_batch_free_tensor_splits_rows():
    tm = _tunified(BatchFree)
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        _rows_are_separate_runs(tm, tm(x, lam=LAMS4), x, LAMS4)
    assert tm.split_reasons == ["fc runs on a tensor that depends on no input (it has no batch axis)"]


class UntracedBatchFree(BatchFree):
    """The same, where fx cannot look (a branch on a value): the module path throughout."""

    def forward(self, x):
        return super().forward(x) if float(x.mean()) > -1e9 else x


class UntracedWindows(nn.Module):
    """Windows folded into the batch (B·2, N/2, C) through a linear, where fx cannot look: the
    rows are samples' rows, so native per-sample kernels are right and the check must say so."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):  # x (B, N, C)
        b, n, c = x.shape
        y = self.fc(x.reshape(b * 2, n // 2, c)).reshape(b, n, c)
        return y if float(x.mean()) > -1e9 else x


def test_the_first_call_check_keeps_native_kernels_where_rows_are_samples():
    tm = _tunified(UntracedWindows)
    x = torch.randn(4, 6, 4)
    with torch.no_grad():
        out = tm(x, lam=LAMS4)
        assert tm._graph is None and not tm.split_reasons and tm.tunify_report.per_sample == "native"
        _rows_are_separate_runs(tm, out, x, LAMS4)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_batch_free_layer_where_fx_cannot_look_is_caught_on_the_first_call(training):
    tm = _tunified(UntracedBatchFree).train(training)
    assert tm._graph is None and not tm.split_reasons  # the premise: nothing to see before it runs
    x = torch.randn(4, 3, 5, 5)
    out = tm(x, lam=LAMS4)
    assert tm.training == training and all(m.training == training for m in tm.modules())
    assert len(tm.split_reasons) == 1 and "rows that are not samples" in tm.split_reasons[0]
    _rows_are_separate_runs(tm, out, x, LAMS4)



class _Quantize(nn.Module):
    """Kept whole (fx cannot trace a branch on a value); snaps features to a plain codebook and
    holds nothing tunable. Counts its calls."""

    calls = 0

    def __init__(self):
        super().__init__()
        self.codes = nn.Embedding(5, 6)

    def forward(self, x):  # x (B, 6, H, W)
        type(self).calls += 1
        flat = x.permute(0, 2, 3, 1).reshape(-1, 6)
        z = self.codes.weight[torch.cdist(flat, self.codes.weight).argmin(1)]
        return z.reshape(x.shape[0], *x.shape[2:], 6).permute(0, 3, 1, 2) if float(x.mean()) > -1e9 else x


class _Coder(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.enc, self.quant, self.dec = nn.Conv2d(3, 6, 3, padding=1), inner, nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x):
        return self.dec(self.quant(self.enc(x)))


@pytest.mark.parametrize("inner", ["quantize", "windows"])
def test_a_kept_whole_block_that_reads_no_lam_needs_no_first_call_check(inner):
    """A vector quantizer turns rounding into another code, so checking it against each λ row
    run alone could only fail on noise: it holds nothing tunable and reads no λ, so the graph
    around it decides, as for a model fx traced whole. A kept-whole block that does read λ is
    checked: its first per-sample call runs it again for each row."""
    torch.manual_seed(0)
    tm = tunify(_Coder(_Quantize() if inner == "quantize" else _ConvWindows()), 2).eval()
    perturb(tm, seed=1)
    assert tm._graph is not None and tm.tunify_report.leaves
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        before = type(tm.model.quant).calls
        out = tm(x, lam=LAMS4)
        first = type(tm.model.quant).calls - before
        assert (first == 1) == (inner == "quantize") and not tm.split_reasons
        assert tm.tunify_report.per_sample == "native"
        before = type(tm.model.quant).calls
        tm(x, lam=LAMS4)
        assert type(tm.model.quant).calls - before == 1  # proved once per kind of call
        _rows_are_separate_runs(tm, out, x, LAMS4)


class _ConvWindows(nn.Module):
    """Kept whole, and a tunable conv inside on the samples' own rows."""

    calls = 0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        type(self).calls += 1
        return self.conv(x) if float(x.mean()) > -1e9 else x


def test_hooks_on_a_converted_layer_keep_running_and_bake_puts_them_back():
    """A forward hook (a feature tap) and a full backward hook on layers that become tunable: the
    plain path never calls the kept ``base_layer``, so left there they would be dropped without a
    word. They move to the tunable layer, fire with the original's values at init, and the
    original model keeps its own; bake moves them to its plain layers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    taps, grads = [], []
    model[0].register_forward_hook(lambda mod, args, out: taps.append(out.detach().clone()))
    model[2].register_full_backward_hook(lambda mod, gin, gout: grads.append(gout[0].detach().clone()))
    x = torch.randn(3, 3, 6, 6)
    model(x).square().sum().backward()
    tap, grad = taps.pop(), grads.pop()
    tm = tunify(model, 2)
    assert len(model[0]._forward_hooks) == 1 and len(model[2]._backward_hooks) == 1  # the original's stay
    for lam in ([0.3, 0.7], LAMS):
        tm(x, lam=lam).square().sum().backward()
        assert_close(taps.pop(), tap)
        assert_close(grads.pop(), grad)
    assert not taps and not grads
    perturb(tm, seed=1)
    with torch.no_grad():
        want = tm(x, lam=[0.3, 0.7])
        mine = taps.pop()
        plain = bake(tm, [0.3, 0.7])
        assert_close(plain(x), want)
        assert_close(taps.pop(), mine)
        assert type(plain[0]) is nn.Conv2d and not taps


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_hook_on_a_block_the_graph_would_inline_runs_on_every_call(when):
    """fx inlines a plain container: a hook on it would never run in the traced graph. Hooked
    at conversion, the block is kept whole (called as a module); hooked afterwards, calls run
    the module path. Either way the hook sees every call (shared, fast path, per-sample) with
    the block's true output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                          nn.Conv2d(4, 3, 3, padding=1))
    taps = []

    def tap(mod, args, out):
        taps.append(out.detach().clone())
    if when == "before":
        model[1].register_forward_hook(tap)
    tm = tunify(model, 2)
    perturb(tm, seed=1)
    if when == "after":
        tm.model[1].register_forward_hook(tap)
    x = torch.randn(2, 3, 6, 6)
    for grad in (True, False, False, False):  # the no-grad repeats take the fast path where there is one
        with torch.set_grad_enabled(grad):
            out = tm(x, lam=[0.3, 0.7])
        assert len(taps) == 1 and taps.pop().shape == (2, 4, 6, 6)
    with torch.no_grad():
        block = tm.model[1]
        with tm.lam_scope([0.3, 0.7]):
            assert_close(block(tm.model[0](x)), taps.pop())  # the direct call's own tap: the true output
        assert_close(tm(x, lam=[0.3, 0.7]), out)
        assert len(taps) == 1
        taps.clear()
        tm(x, lam=LAMS[:2])
        assert len(taps) >= 1  # the first per-sample call of a kind may run the block again for its check


# -- weight norm and spectral norm -------------------------------------------------------------
class Normed(nn.Module):
    def __init__(self, new: bool):
        super().__init__()
        wn = parametrizations.weight_norm if new else weight_norm
        sn = parametrizations.spectral_norm if new else spectral_norm
        self.wn = wn(nn.Conv2d(3, 6, 3, padding=1))
        self.wn_all = wn(nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect"), dim=None)
        self.sn = sn(nn.Conv2d(6, 6, 3, padding=1))
        self.out = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return self.out(torch.relu(self.sn(torch.relu(self.wn_all(torch.relu(self.wn(x)))))))


@pytest.mark.parametrize("new", [False, True], ids=["old-hooks", "parametrizations"])
def test_weight_norm_becomes_tunable_and_old_hooks_deepcopy(new):
    m = Normed(new)  # no forward before tunify: old hooks hold a non-leaf weight deepcopy refuses
    tm = _check_tunable(m, torch.randn(3, 3, 8, 8), rel=1e-4)
    layers = dict(tm.model.named_modules())
    assert isinstance(layers["wn"], TunableWeightNormConv2d) and isinstance(layers["wn_all"], TunableWeightNormConv2d)
    assert "sn" in {s.name for s in tm.tunify_report.skipped}
    plain = bake(tm, [0.5, 0.5])
    g = plain.wn.weight_g if not new else plain.wn.parametrizations.weight.original0
    assert_close(g, tm.model.wn.weights_g.mean(0))


# -- the guard ---------------------------------------------------------------------------------
class TypeBranch(nn.Module):
    """Asks for its layer's exact type (and branches on data, so only the module path converts
    it): a conversion changes the answer, at init already."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        x = self.stem(x)
        if bool(x.sum() > -1e9) and type(self.conv) is nn.Conv2d:
            return self.conv(x)
        return x


def test_guard_names_the_first_differing_layer():
    m = TypeBranch().eval()
    x = torch.randn(2, 3, 6, 6)
    tunify(m, 2)  # without example inputs nothing runs, nothing is checked
    with pytest.raises(ConversionMismatch, match=r"first differing layer: conv \(Conv2d\)"):
        tunify(m, 2, example_inputs=x)
    tunify(m, 2, example_inputs=x, exclude=["conv"])  # the fix the message suggests


# -- a weight-like tensor no per-sample form can hold: the report says what to exclude -----------
class _Gain(nn.Module):
    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor([0.5]))

    def value(self) -> float:  # read through a method, as a Python float (HVICIDNet's density_k)
        return float(self.k)


class ScalarAsFloat(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = _Gain()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * self.gain.value()


def test_a_tensor_no_sample_can_hold_is_named_with_the_exclusion_that_helps():
    x = torch.randn(3, 3, 6, 6)
    tm = _tunified(ScalarAsFloat)
    with torch.no_grad():
        _rows_are_separate_runs(tm, tm(x, lam=LAMS), x, LAMS)
    assert "gain.k, a weight-like tensor of shape (1,)" in tm.tunify_report.per_sample
    assert "exclude=['gain.k'] keeps that tensor plain" in tm.tunify_report.per_sample
    kept = _tunified(ScalarAsFloat, exclude=["gain.k"])  # taking the advice
    with torch.no_grad():
        _rows_are_separate_runs(kept, kept(x, lam=LAMS), x, LAMS)
    assert kept.tunify_report.per_sample == "native" and not kept.split_reasons


# -- code fx cannot see that shapes a tensor by the batch (GFPGAN's StyleGAN2 decoder) ----------
class _ConstantInput(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, c, 4, 4))

    def forward(self, batch: int):  # mixed per sample it is (B, c, 4, 4): repeated, B² rows
        return self.weight.repeat(batch, 1, 1, 1)


class _ModulatedConv(nn.Module):
    """StyleGAN2's modulated conv: a (1, out, in, 3, 3) weight scaled per sample by a style,
    demodulated, run as one grouped conv over the batch."""

    def __init__(self, c: int, style: int):
        super().__init__()
        self.modulation = nn.Linear(style, c)
        self.weight = nn.Parameter(torch.randn(1, c, c, 3, 3) / 3)

    def forward(self, x, style):
        b, c, h, w = x.shape
        weight = self.weight * self.modulation(style).view(b, 1, c, 1, 1)
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, c, 1, 1, 1)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight.view(b * c, c, 3, 3), padding=1, groups=b)
        return out.view(b, c, h, w)


class _StyleDecoder(nn.Module):
    def __init__(self, c: int = 4, style: int = 6):
        super().__init__()
        self.const = _ConstantInput(c)
        self.conv = _ModulatedConv(c, style)
        self.bias = nn.Parameter(torch.randn(1, c, 1, 1))

    def forward(self, style):
        if bool(style.abs().sum() < 0):  # a branch on a value: kept whole
            style = -style
        return self.conv(self.const(style.shape[0]), style) + self.bias


class StyleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 6, 3, padding=1)
        self.dec = _StyleDecoder()
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.out(self.dec(self.enc(x).mean((2, 3))))


def test_a_kept_whole_block_that_breaks_per_sample_kernels_runs_by_rows():
    """Per-sample kernels raise a shape error inside the decoder (B² rows reach a view): the
    call runs when each λ row runs alone, so the error is the kernels', and the decoder is run
    by rows while the encoder stays native. Before, the call raised."""
    tm = _check_tunable(StyleNet(), torch.randn(3, 3, 8, 8))
    assert "found at run time" in tm.tunify_report.per_sample and "dec (_StyleDecoder)" in tm.tunify_report.per_sample
    assert not tm.split_reasons


def test_a_bad_input_per_sample_raises_its_own_error_and_changes_nothing():
    tm = _tunified(StyleNet)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="expected input"):
            tm(torch.randn(2, 5, 8, 8), lam=LAMS[:2])  # 5 channels where the encoder takes 3
        assert not tm.split_reasons and tm.__dict__["_row_owners"] and all(
            name != "dec" for name, _ in tm.__dict__["_row_owners"])
        x = torch.randn(2, 3, 8, 8)
        _rows_are_separate_runs(tm, tm(x, lam=LAMS[:2]), x, LAMS[:2])


class _NoisyDecoder(_StyleDecoder):
    def forward(self, style):  # StyleGAN2's noise injections, each drawn for the whole batch at once
        out = super().forward(style)
        for _ in range(2):  # two draws: a split batch takes them in another order
            out = out + 0.5 * out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        return out


def test_a_block_that_draws_random_numbers_says_so_and_runs_each_row_alone():
    torch.manual_seed(0)
    model = StyleNet()
    model.dec = _NoisyDecoder()
    tm = tunify(model.eval(), 2).eval()
    perturb(tm, seed=1)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        tm(x, lam=LAMS)  # the first call finds out (its tries draw numbers too)
        torch.manual_seed(5)
        out = tm(x, lam=LAMS)
        torch.manual_seed(5)
        assert_close(out, tm(x, lam=LAMS, group_by_lam=True), rel=1e-5)  # what each row alone draws
    assert len(tm.split_reasons) == 1 and "draws random numbers" in tm.split_reasons[0], tm.split_reasons
    assert "randomize_noise=False" in tm.tunify_report.per_sample


def test_the_guard_passes_a_model_that_draws_random_numbers_and_splits_it_from_the_start():
    """GFPGAN's default call draws fresh noise maps: `tunify convert` raised a false mismatch
    (its per-sample run, by rows, drew other numbers than the original's one run)."""
    torch.manual_seed(0)
    model = StyleNet()
    model.dec = _NoisyDecoder()
    x = torch.randn(3, 3, 8, 8)
    tm = tunify(model.eval(), 2, example_inputs=x).eval()  # raised ConversionMismatch before
    assert len(tm.split_reasons) == 1 and "draws random numbers" in tm.split_reasons[0]
    calm = tunify(StyleNet().eval(), 2, example_inputs=x)  # no draws: nothing split
    assert not calm.split_reasons


def test_finding_out_that_a_block_breaks_per_sample_kernels_leaves_batchnorm_statistics_alone(monkeypatch):
    """The check that the call runs with each λ row alone changes no buffer: in training, the
    statistics after the first per-sample call are those of the runs that made its output."""
    class Normed(StyleNet):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.out(self.dec(self.enc(self.norm(x)).mean((2, 3))))

    torch.manual_seed(0)
    tm = tunify(Normed(), 2).train()
    x = torch.randn(3, 3, 8, 8)
    checks = []
    real = type(tm)._ours

    def spy(self, *a):
        before = self.model.norm.running_mean.clone()
        ours = real(self, *a)
        checks.append(torch.equal(before, self.model.norm.running_mean))
        return ours

    monkeypatch.setattr(type(tm), "_ours", spy)
    tm(x, lam=LAMS)
    assert checks == [True]
