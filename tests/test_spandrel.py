"""Every architecture in spandrel's main registry, as a user's model file: built small with
random init (no zero tensors, so no branch hides), saved to a temporary file, loaded back
through spandrel, tunified with the guard on, and checked as tests/test_zoo.py checks its
models."""
import copy
import os
from dataclasses import dataclass

import pytest
import torch
from conftest import assert_close
from spandrel_zoo import SPANDREL_ZOO, SpandrelEntry
from torch import nn

from tunify import TunableLayer, TunableModel, bake, tunify
from tunify.archs.model_file import load_model_file, model_file_config, model_from_config

spandrel = pytest.importorskip("spandrel")
SLOW = os.environ.get("TUNIFY_SLOW") == "1"
LAMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
LAYER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
ONLY = set(filter(None, os.environ.get("TUNIFY_SPANDREL_ONLY", "").split(",")))  # e.g. "SPAN,DAT"
ENTRIES = [e for e in SPANDREL_ZOO if not ONLY or e.arch in ONLY]


def test_every_registry_architecture_is_in_the_suite():
    assert {str(s.architecture.id) for s in spandrel.MAIN_REGISTRY.architectures()} == {e.arch for e in SPANDREL_ZOO}


@dataclass
class Case:
    entry: SpandrelEntry
    model: nn.Module
    args: tuple
    tm: TunableModel
    file: str
    built_small: bool = False  # GFPGAN, LaMa: not from ``file`` (spandrel loads them at one size only)


def _leaves(out):
    return [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor)]


def _close(a, b, rel=1e-4):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert_close(x, y, rel=rel)


def _call(model, args, **kw):
    torch.manual_seed(0)  # AuraSR draws noise in its forward
    return model(*[a.clone() for a in args], **kw)  # several forwards change their input in place


@torch.no_grad()
def _perturb(tm: nn.Module, seed: int = 1) -> None:
    """Every kernel of every tunable tensor gets its own random offset."""
    g = torch.Generator().manual_seed(seed)
    stacks = [p for m in tm.modules() if isinstance(m, TunableLayer) for p in m.parameters(recurse=False)]
    stacks += [p for n, p in tm.named_parameters() if n.endswith(".original")]
    for p in stacks:
        for k in range(p.shape[0]):
            ref = p[k].abs().mean().item() if p[k].numel() else 0.0
            p[k].add_(torch.randn(p[k].shape, generator=g) * (0.2 * ref if ref > 0 else 0.05))


def _randomized(model: nn.Module) -> nn.Module:
    """No zero tensor left (a zero gate or noise strength would hide its branch)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.numel() and not t.any():
                t.normal_(0, 0.1)
    return model


_FILES: dict = {}  # arch -> (descriptor, path): the full-size GFPGAN and LaMa are built once per module


def _through_a_file(entry: SpandrelEntry, tmp_path_factory):
    """``entry`` built with random init, saved as a user's file and loaded back through
    spandrel: (descriptor, path)."""
    if entry.arch in _FILES:
        return _FILES[entry.arch]
    torch.manual_seed(0)
    built = _randomized(entry.build().eval())
    suffix = ".safetensors" if len(entry.arch) % 2 else ".pth"  # both readers, by turns
    path = str(tmp_path_factory.mktemp("files") / f"{entry.arch}{suffix}")
    state = {k: v.contiguous() for k, v in built.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.clone() for k, v in state.items()}, path)
    descriptor = load_model_file(path)
    assert str(descriptor.architecture.id) == entry.arch
    if entry.slow:
        _FILES[entry.arch] = descriptor, path
    return descriptor, path


def _assert_accounted(model: nn.Module, report) -> None:
    """Every conv/linear of ``model`` converted, or skipped (itself or inside a skipped module) with a reason."""
    layers = {n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)}
    accounted = {c.name for c in report.converted} | {a for c in report.converted for a in c.aliases}
    skipped = {s.name: s.reason for s in report.skipped}
    inside_skipped = {n for n in layers if any(n.startswith(s + ".") for s in skipped)}
    assert layers <= accounted | set(skipped) | inside_skipped, sorted(layers - accounted - set(skipped))[:5]
    assert all(reason for reason in skipped.values())
    assert report.converted


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.slow], ids=lambda e: e.arch)
def test_the_full_size_architectures_convert_and_are_exact_at_init(entry, tmp_path_factory):
    """GFPGAN and LaMa exist only at their official sizes, where the full checks below need
    TUNIFY_SLOW=1; this much runs everywhere: from the file, every layer accounted for, every
    kernel a copy of the pretrained weight, one sample equal to the original at a shared λ,
    bake the original's types; for LaMa, whose inputs are small, also after perturbing every
    kernel: λ changes the output, per-sample rows equal separate runs, bake equals tm."""
    descriptor, _ = _through_a_file(entry, tmp_path_factory)
    original = {k: v.clone() for k, v in descriptor.model.state_dict().items()}
    tm = tunify(descriptor, 2)
    _assert_accounted(descriptor.model, tm.tunify_report)
    checked = 0
    for name, stack in tm.state_dict().items():
        for plain in _original_names(name):
            if plain in original:
                assert all(torch.equal(stack[k], original[plain]) for k in range(stack.shape[0])), name
                checked += 1
    assert checked >= len(tm.tunify_report.converted)
    one = tuple(a[:1] for a in entry.inputs())  # GFPGAN: ~6 s a forward at 512² on one thread
    with torch.no_grad():
        _close(_call(tm.eval(), one, lam=[0.4, 0.6]), _call(descriptor.model.eval(), one))
    plain = bake(tm, [0.5, 0.5])
    assert sorted(type(m).__name__ for m in plain.modules()) == sorted(type(m).__name__ for m in descriptor.model.modules())
    if entry.arch == "LaMa":  # small inputs here: the perturbed checks too (GFPGAN's 512² forwards take ~6 s each)
        args = entry.inputs()
        _perturb(tm)
        with torch.no_grad():
            a, b = _call(tm, args, lam=[1.0, 0.0]), _call(tm, args, lam=[0.0, 1.0])
            assert (a - b).abs().max() > 1e-3 * a.abs().max()  # λ matters, so a routing bug would show
            lams = torch.tensor([[0.8, 0.2], [0.1, 0.9]])
            out = _call(tm, args, lam=lams)
            for i in range(2):
                _close(out[i : i + 1], _call(tm, tuple(t[i : i + 1] for t in args), lam=lams[i]))
            _close(_call(bake(tm, [0.3, 0.7]), args), _call(tm, args, lam=[0.3, 0.7]))


@pytest.fixture(scope="module", params=ENTRIES, ids=[e.arch for e in ENTRIES])
def case(request, tmp_path_factory) -> Case:
    entry: SpandrelEntry = request.param
    descriptor, path = _through_a_file(entry, tmp_path_factory)
    if entry.slow and not SLOW:  # the architecture's own code built small; the file's checks are above
        torch.manual_seed(0)
        model, args = _randomized(entry.small().eval()), entry.inputs(shape=entry.small_shape)
        tm = tunify(model, ["fidelity", "perception"], example_inputs=args).eval()
    else:
        model, args = descriptor.model.eval(), entry.inputs()
        tm = tunify(descriptor, ["fidelity", "perception"], example_inputs=args).eval()  # the guard runs
    _perturb(tm)
    return Case(entry, model, args, tm, path, built_small=entry.slow and not SLOW)


def test_every_layer_converted_or_skipped_with_a_reason(case: Case):
    _assert_accounted(case.model, case.tm.tunify_report)


@torch.no_grad()
def test_exact_at_init(case: Case):
    fresh = tunify(case.model, 2).eval()
    ref = _call(case.model, case.args)
    n = case.args[0].shape[0]
    for lam in ([0.4, 0.6], torch.distributions.Dirichlet(torch.ones(2)).sample((n,))):
        _close(_call(fresh, case.args, lam=lam), ref)


@torch.no_grad()
def test_lam_changes_output(case: Case):
    a = _leaves(_call(case.tm, case.args, lam=[1.0, 0.0]))[0]
    b = _leaves(_call(case.tm, case.args, lam=[0.0, 1.0]))[0]
    assert (a - b).abs().max() > 1e-4 * a.abs().max()


@torch.no_grad()
def test_per_sample_rows_equal_separate_runs(case: Case):
    n = case.args[0].shape[0]
    lams = LAMS[:n] if n > 1 else LAMS[2:]
    out = _leaves(_call(case.tm, case.args, lam=lams))[0]
    for i in range(n):
        row = _leaves(_call(case.tm, tuple(a[i : i + 1] for a in case.args), lam=lams[i]))[0]
        assert_close(out[i : i + 1], row)


@torch.no_grad()
def test_bake_equals_tunable_with_the_original_types(case: Case):
    plain = bake(case.tm, [0.3, 0.7])
    assert not any(isinstance(m, TunableLayer) for m in plain.modules())
    assert sorted(type(m).__name__ for m in plain.modules()) == sorted(type(m).__name__ for m in case.model.modules())
    out = _call(plain, case.args)
    for _ in range(3):  # the second no-grad call at one λ builds the fast path (surgery/fast.py), the third runs it
        _close(out, _call(case.tm, case.args, lam=[0.3, 0.7]))


def _original_names(name: str) -> list:
    """The original's parameter names behind a tunable stack ("model.conv.weights" → conv.weight)."""
    name = name[len("model."):]
    if name.endswith(".original"):  # a parametrized weight-like tensor
        return [name[: -len(".original")].replace("parametrizations.", "")]
    for stack, plain in ((".weights_g", ["weight_g", "parametrizations.weight.original0"]),
                         (".weights_v", ["weight_v", "parametrizations.weight.original1"]),
                         (".weights", ["weight"]), (".biases", ["bias"])):
        if name.endswith(stack):
            return [f"{name[: -len(stack)]}.{p}" for p in plain]
    return []


def test_every_tunable_tensor_gets_a_gradient(case: Case):
    """In training mode (re-parameterised blocks train their branches), every tunable tensor
    whose original tensor gets a gradient from the original's forward gets one too."""
    lam = [0.3, 0.7]  # both kernels weigh in; a split per-sample batch would change BatchNorm's training statistics
    original = {k: v for k, v in case.model.named_parameters()}
    saved = copy.deepcopy(case.model.state_dict()), copy.deepcopy(case.tm.state_dict())  # training-mode BN stats
    try:
        case.model.train(), case.tm.train()
        case.model.zero_grad(), case.tm.zero_grad()
        _leaves(_call(case.model, case.args))[0].float().pow(2).mean().backward()
        _leaves(_call(case.tm, case.args, lam=lam))[0].float().pow(2).mean().backward()
        stacks = [(f"{mn}.{pn}", p) for mn, m in case.tm.named_modules() if isinstance(m, TunableLayer)
                  for pn, p in m.named_parameters(recurse=False)]
        stacks += [(n_, p) for n_, p in case.tm.named_parameters() if n_.endswith(".original")]
        assert stacks
        missing = []
        for name, p in stacks:
            sources = [original[o] for o in _original_names(name) if o in original]
            assert sources, f"{name}: no original tensor found"
            if any(s.grad is not None and s.grad.abs().sum() > 0 for s in sources) and p.grad is None:
                missing.append(name)
        assert not missing, f"{len(missing)} tensors got no gradient, e.g. {missing[:3]}"
    finally:
        case.model.load_state_dict(saved[0]), case.tm.load_state_dict(saved[1])
        case.model.eval(), case.tm.eval()
        case.model.zero_grad(), case.tm.zero_grad()


def test_config_rebuilds_the_network_without_the_file(case: Case):
    descriptor = load_model_file(case.file)
    config = model_file_config(descriptor)
    assert config["spandrel_arch"] == case.entry.arch
    rebuilt = model_from_config(config)
    rebuilt.load_state_dict(descriptor.model.state_dict())  # strict: every key at its shape
    assert type(rebuilt) is type(descriptor.model)
    assert getattr(rebuilt, "hyperparameters", None) == getattr(descriptor.model, "hyperparameters", None)
    if case.built_small:  # same class, hyper-parameters and state; a 512² GFPGAN forward takes ~10 s
        return
    assert case.tm.config.model_file["spandrel_arch"] == case.entry.arch
    with torch.no_grad():
        _close(_call(rebuilt.eval(), case.args), _call(case.model, case.args))
