"""``tunify()``: one call from a pretrained network to a tunable one."""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from ..lam import LamSpace
from ..layers import LowRankLayer, TunableParameter, TunableWeightNormConv2d
from .config import TunifyConfig
from .fingerprint import state_fingerprint
from .graph import rewrite_graph
from .hooks import hook_memo
from .model import TunableModel
from .plan import Plan, apply_plan, make_plan
from .report import Converted, TunifyReport
from .targets import TargetSpec
from .tracer import TraceFailure, trace_modes, traced_signature
from .guard import check_equal_at_init, check_per_sample_routing
from .layout import sequence_first_reasons
from .owners import mark_row_owners, owners_summary
from .writers import keep_writes_exact

__all__ = ["tunify", "objective_names", "register_source"]

MODES = ("auto", "fx", "module")

# Hooks that turn other things into a network: (obj) -> (nn.Module, record) or None. The record
# lands in tm.config.model_file. tunify.archs.model_file registers spandrel's ModelDescriptor here, so
# surgery never imports what sits above it.
_SOURCES: List[Callable[[Any], Optional[Tuple[nn.Module, Dict[str, Any]]]]] = []


def register_source(hook: Callable[[Any], Optional[Tuple[nn.Module, Dict[str, Any]]]]) -> None:
    """Let ``tunify(obj, ...)`` take objects that are not modules: ``hook(obj)`` returns
    ``(network, record)`` for the objects it knows, None for others."""
    if hook not in _SOURCES:
        _SOURCES.append(hook)


def _unwrap(model: Any) -> Tuple[Any, Optional[Dict[str, Any]]]:
    if isinstance(model, nn.Module):
        return model, None
    for hook in _SOURCES:
        found = hook(model)
        if found is not None:
            return found
    raise TypeError(f"tunify() takes an nn.Module or a spandrel ModelDescriptor, got {type(model).__name__}")


def objective_names(objectives: Union[int, Sequence[Any]]) -> tuple:
    """Names of the p objectives: an int p gives objective_0..; strings are names; specs
    (dicts or objects) give their ``name`` (or ``type``)."""
    if isinstance(objectives, bool) or not isinstance(objectives, (int, Sequence)) or isinstance(objectives, str):
        raise TypeError(f"objectives must be an int p or a list of p names/specs, got {objectives!r}")
    if isinstance(objectives, int):
        return tuple(f"objective_{i}" for i in range(objectives))
    names = []
    for i, obj in enumerate(objectives):
        if isinstance(obj, str):
            names.append(obj)
        elif isinstance(obj, dict):
            names.append(str(obj.get("name") or f"{obj.get('type', 'objective')}_{i}"))
        else:
            names.append(str(getattr(obj, "name", None) or f"objective_{i}"))
    if len(set(names)) != len(names):
        raise ValueError(f"objective names must be unique, got {names}")
    return tuple(names)


def _copy_except_kernels(model: nn.Module, plan: Plan) -> nn.Module:
    """Deep copy of ``model`` that shares (does not copy) the weights and biases of layers
    about to be converted: their stacks are built from them next and the copy lets go of
    them, so the caller's tensors are only read. Halves the memory traffic of conversion."""
    memo = {}
    for _, module, _ in plan.layers.values():
        for tensor in (module.weight, getattr(module, "bias", None)):
            if tensor is not None:
                memo[id(tensor)] = tensor
    return copy.deepcopy(model, hook_memo(model, memo))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tunify(
    model: Any,
    objectives: Union[int, Sequence[Any]],
    *,
    targets: TargetSpec = None,
    exclude: TargetSpec = None,
    lam_space: str = "simplex",
    mode: str = "auto",
    inplace: bool = False,
    example_inputs: Any = None,
    rank: Optional[int] = None,
) -> TunableModel:
    """Make ``model`` tunable by p objectives; the result equals ``model`` for every valid λ.

    Args:
        model: any nn.Module (left untouched unless ``inplace``), or a spandrel
            ``ModelDescriptor`` (what ``tunify.load_model_file(path)`` returns).
        example_inputs: a tensor or tuple of forward arguments; when given, the result is run
            against the original at a random shared and a random per-sample λ and
            ``ConversionMismatch`` names the first layer that differs; then a per-sample call is
            checked against running each row alone (a model that fails it runs rows separately).
        objectives: p, or the p objective names/specs.
        targets / exclude: which layers and weight-like tensors (names, dotted suffixes,
            regexes, types or ``fn(name, module)``); default: every conv and linear layer and
            every weight-like tensor of the model's own modules, norms excepted.
        lam_space: "simplex" (trade-offs, Σλ = 1) or "box" (independent knobs in [0, 1]).
        mode: "auto" (fx, falling back to module replacement), "fx" or "module".
        rank: None (p full kernels per layer) or r: every conv/linear keeps its pretrained
            weight frozen and adds p rank-r deltas, ``W(λ) = W_0 + Σ λ_i B_i A_i`` (B_i start
            at zero); biases, weight-like tensors and layers a rank-r delta would not shrink
            (depthwise convs) stay full. ``tm.config.base_record`` then identifies the base weights
            (their sha256), for ``save_pretrained(..., adapter_only=True)``.

    Returns:
        TunableModel: ``tm(*inputs, lam=λ)`` with λ (B, p) or (p,).
    """
    model, source_record = _unwrap(model)  # a spandrel descriptor: its network and what rebuilds it
    if example_inputs is not None and inplace:
        raise ValueError("example_inputs compares the result with the original, which inplace=True changes; "
                         "pass inplace=False")
    rank = _check_rank(rank)
    # Before conversion: an inplace conversion changes the model, and the record must be the base's.
    record = state_fingerprint(model) if rank else None
    tm = _convert(model, objectives, targets, exclude, lam_space, mode, inplace, rank)
    tm.config.base_record = record
    if source_record is not None:
        tm.config.model_file = source_record
    if example_inputs is not None:
        tm.eval() if not model.training else None
        check_equal_at_init(model, tm, example_inputs)
        reason = check_per_sample_routing(tm, example_inputs)
        if reason:
            tm.tunify_report.per_sample = f"exact, by running each distinct λ row on the shared path ({reason})"
    return tm


def _check_rank(rank: Any) -> Optional[int]:
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer (the rank of each objective's delta, e.g. 4) or None for "
                         f"full kernels, got {rank!r}")
    return rank


def _convert(model: nn.Module, objectives: Any, targets: TargetSpec, exclude: TargetSpec, lam_space: str,
             mode: str, inplace: bool, rank: Optional[int] = None) -> TunableModel:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = objective_names(objectives)
    space = LamSpace(lam_space, len(names), names)
    start = time.perf_counter()
    params_before = _count(model)
    work = model if inplace else _copy_except_kernels(model, make_plan(model, targets, exclude))
    plan = make_plan(work, targets, exclude)
    if not plan.layers and not plan.params:
        raise ValueError(
            f"nothing to convert in {type(model).__name__}: no conv/linear layer or weight-like "
            "tensor was selected. Check `targets`/`exclude`, or register your layer type with "
            "tunify.register_layer."
        )
    writers, writer_names, writes = keep_writes_exact(work, plan)
    traced, leaves, fallback = _trace_or_fallback(work, plan, writers, mode)
    work = apply_plan(work, plan, space, rank)
    graphs, how, split_reasons = [], {}, []
    for graph, modes in traced:  # one per training mode the forward tells apart (tracer.py)
        gm, found, reasons = rewrite_graph(graph, work)
        graphs.append((gm, modes))
        how = {**found, **how}
        split_reasons += [r for r in reasons if r not in split_reasons]
    gm = graphs[0][0] if graphs else None
    if gm is None:
        # Off the graph every tensor is read in its owner's forward: the owner runs by rows.
        split_reasons = mark_row_owners(work, [
            name for name, (owner, p) in plan.params.items() if owner.parametrizations[p][0].per_sample == "split"
        ])
    split_reasons = sequence_first_reasons(work) + list(split_reasons)
    report = _report(model, work, plan, space, how, "fx" if gm is not None else "module", leaves, fallback,
                     params_before, rank)
    if split_reasons:
        shown = "; ".join(split_reasons[:2]) + (f"; +{len(split_reasons) - 2} more" if len(split_reasons) > 2 else "")
        report.per_sample = f"exact, by running each distinct λ row on the shared path ({shown})"
    else:
        report.per_sample = owners_summary(work) or report.per_sample
        if writes:
            report.per_sample += (f"; {len(writer_names)} re-parameterised block(s) that write a weight in the forward "
                                  f"({writes[0]}) run their unfused training branch, checked once per kind of call "
                                  "against each λ row run alone")
    report.seconds = time.perf_counter() - start
    # Plain names/regex strings can be written to config.json; types and predicates cannot.
    config = TunifyConfig(space.names, space.kind, targets=_plain(targets), exclude=_plain(exclude), mode=mode,
                          path=report.path, rank=rank,
                          serializable=(targets is None or _plain(targets) is not None)
                          and (exclude is None or _plain(exclude) is not None))
    tm = TunableModel(work, space, graphs, split_reasons, report, config, writers=writer_names)
    tm.graph_inputs = traced_signature(work) if gm is not None else None
    return tm


def _trace_or_fallback(work: nn.Module, plan: Plan, writers: set, mode: str) -> Tuple[list, list, str]:
    """([(fx graph, the training flags it holds for)], empty on the module path; automatic
    leaves; why the module path is used: "" when it is not)."""
    root_is_layer = id(work) in plan.layers and plan.layers[id(work)][2] is TunableWeightNormConv2d
    if id(work) in writers:  # a traced root forward would lose its own writes
        if mode == "fx":
            raise TraceFailure(f"{type(work).__name__}.forward writes a layer's weight; only mode='module' keeps it")
        return [], [], f"{type(work).__name__}.forward writes a layer's weight (kept on the module path)"
    if mode == "module" or root_is_layer:  # a bare weight-normalised conv is its own path
        return [], [], ""
    try:
        graphs, leaves = trace_modes(work, set(plan.layers) | writers)
    except TraceFailure as exc:
        if mode == "fx":
            raise
        return [], [], str(exc)
    return graphs, leaves, ""


def _report(model: nn.Module, work: nn.Module, plan: Plan, space: LamSpace, how: Dict[str, str], path: str,
            leaves: list, fallback: str, params_before: int, rank: Optional[int]) -> TunifyReport:
    """What was converted (and by which path), skipped, and what it cost in parameters."""
    lowrank = {id(m): m for m in work.modules() if isinstance(m, LowRankLayer)}.values()
    report = TunifyReport(
        model=type(model).__name__, path=path, objectives=space.names, lam_space=space.kind,
        num_kernels=space.num_kernels, skipped=list(plan.skipped), leaves=leaves, fallback_reason=fallback,
        params_before=params_before, params_after=_count(work), rank=rank,
        frozen=sum(m.base_weight.numel() for m in lowrank),
    )
    for names, module, _ in plan.layers.values():
        made = type(work.get_submodule(names[0]) if names[0] else work).__name__  # full or low rank
        report.converted.append(Converted(names[0], type(module).__name__, made, how.get(names[0], path), tuple(names[1:])))
    for name, (owner, pname) in plan.params.items():
        tp: TunableParameter = owner.parametrizations[pname][0]
        report.converted.append(Converted(name, f"Parameter{tp.shape}", "TunableParameter", how.get(name, path)))
    return report


def _plain(spec: TargetSpec):
    items = [] if spec is None else list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        return None
    if all(isinstance(i, str) for i in items):
        return items
    return None  # types, predicates or compiled regexes cannot be written down
