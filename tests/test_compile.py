"""torch.compile of a tunable model on the CPU: equal to eager, no recompilation for new λ
values, no cached (stale) kernel baked into a compiled graph. The heavy checks use the
aot_eager backend (the same graphs inductor gets, without code generation); one inductor
run checks real code generation on a tiny model."""
import pytest
import torch
from conftest import assert_close, perturb

from tunify import tunify
from tunify.archs import create_model
from tunify.surgery.graph import COEFFS_INPUT


def _tm():
    torch.manual_seed(0)
    model = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    tm = tunify(model, 2).eval()
    perturb(tm, seed=2)
    return tm


def _counting(backend="aot_eager"):
    graphs = []

    def compile_fn(gm, example_inputs):
        from torch._dynamo.backends.registry import lookup_backend

        graphs.append(gm)
        return lookup_backend(backend)(gm, example_inputs)
    return graphs, compile_fn


@torch.no_grad()
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_compiled_equals_eager_without_recompiling(per_sample):
    torch._dynamo.reset()
    tm, x = _tm(), torch.randn(3, 3, 16, 16)
    graphs, backend = _counting()
    ctm = torch.compile(tm, backend=backend)
    g = torch.Generator().manual_seed(0)
    counts = []
    for _ in range(4):
        lam = torch.rand(3, 2, generator=g).softmax(1) if per_sample else torch.rand(2, generator=g).softmax(0)
        assert_close(ctm(x, lam=lam), tm(x, lam=lam), rel=1e-5)
        counts.append(len(graphs))
    assert counts[0] > 0 and len(set(counts)) == 1, counts  # every later λ value reuses the graphs


@torch.no_grad()
def test_network_is_one_graph_and_follows_weight_edits():
    torch._dynamo.reset()
    tm, x = _tm(), torch.randn(2, 3, 16, 16)
    graphs, backend = _counting()
    body = torch.compile(tm._graph, fullgraph=True, backend=backend)  # raises on any graph break
    lam = torch.tensor([0.3, 0.7])
    coeffs = tm.coefficients(lam)
    assert_close(body(x, **{COEFFS_INPUT: coeffs}), tm(x, lam=lam), rel=1e-5)
    for p in tm.parameters():  # kernels are graph inputs, never constants or cached mixtures
        if p.dim() and p.shape[0] == 2:
            p[0].mul_(-1)
    assert_close(body(x, **{COEFFS_INPUT: coeffs}), tm(x, lam=lam), rel=1e-5)
    assert len(graphs) == 1


def test_compiled_training_step_matches_eager():
    torch._dynamo.reset()
    tm, x = _tm(), torch.randn(2, 3, 16, 16)
    tm.train()
    lam = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    ctm = torch.compile(tm, backend="aot_eager")
    ctm(x, lam=lam).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in tm.named_parameters() if p.grad is not None}
    tm.zero_grad()
    tm(x, lam=lam).square().mean().backward()
    assert grads
    for n, p in tm.named_parameters():
        if n in grads:
            assert_close(grads[n], p.grad, rel=1e-4)


@torch.no_grad()
def test_inductor_on_cpu():
    torch._dynamo.reset()
    tm, x = _tm(), torch.randn(2, 3, 16, 16)
    ctm = torch.compile(tm)  # inductor: C++ code generation (the per-sample graphs are as above)
    for lam in (torch.tensor([0.3, 0.7]), torch.tensor([0.9, 0.1])):
        assert_close(ctm(x, lam=lam), tm(x, lam=lam), rel=1e-4)


@torch.no_grad()
def test_a_dynamic_batch_size_compiles_per_sample():
    """Batch sizes as symbols (dynamic=True, or dynamo's own choice after a second size): the
    per-sample forms' choice may not use the batch size as a key (it raised before)."""
    torch._dynamo.reset()
    tm = _tm()
    ctm = torch.compile(tm, backend="aot_eager", dynamic=True)
    for b in (3, 5):
        x = torch.randn(b, 3, 16, 16)
        lam = torch.distributions.Dirichlet(torch.ones(2)).sample((b,))
        assert_close(ctm(x, lam=lam), tm(x, lam=lam), rel=1e-5)
