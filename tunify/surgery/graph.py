"""Rewriting a traced graph so λ is an explicit input that reaches every tunable call site.

After the modules are swapped (``plan.apply_plan``), the graph is patched in three ways:
1. a placeholder ``tunify_coeffs`` is added, and every call of a tunable layer gets it;
2. ``F.conv2d`` / ``F.linear`` calls on the model's own tunable parameters become
   ``tunable_conv2d`` / ``tunable_linear`` on the parameter's stack (per-sample capable);
3. other reads of a tunable tensor (``self.beta``, ``self.conv.weight``) read its stack and
   mix it in the graph.
Submodules kept whole (leaves) read the coefficients from the scope the model sets.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..layers import (LowRankLayer, TunableLayer, TunableModuleLayer, TunableParameter, mix_operand,
                      mix_operand_reshaped, mix_parameter, mixed_weight, tunable_conv2d, tunable_linear)
from .owners import mark_row_owners

__all__ = ["COEFFS_INPUT", "rewrite_graph", "resync_attrs"]

COEFFS_INPUT = "tunify_coeffs"
_CONV = {F.conv2d, torch.conv2d}
_LINEAR = {F.linear, torch._C._nn.linear}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_LINEAR_ARGS = ("input", "weight", "bias")


def _stack_reads(root: nn.Module) -> Dict[str, Tuple[str, str, tuple]]:
    """Map every attribute path a graph may read to (stack path, per-sample mode, shape)."""
    reads: Dict[str, Tuple[str, str, tuple]] = {}
    for name, module in root.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, TunableModuleLayer) and isinstance(getattr(module, "weights", None), nn.Parameter):
            reads[f"{prefix}weight"] = (f"{prefix}weights", "split", ())
            if module.biases is not None:
                reads[f"{prefix}bias"] = (f"{prefix}biases", "split", ())
        elif isinstance(module, LowRankLayer):  # its weight is folded from W_0 and factors, not one stack
            reads[f"{prefix}weight"] = (name, "lowrank", ())
            if module.biases is not None:
                reads[f"{prefix}bias"] = (f"{prefix}biases", "split", ())
        plist = getattr(module, "parametrizations", None)
        if isinstance(plist, nn.ModuleDict):
            for pname, entry in plist.items():
                if entry and isinstance(entry[0], TunableParameter):
                    reads[f"{prefix}{pname}"] = (f"{prefix}parametrizations.{pname}.original", "operand", entry[0].shape)
    return reads


def _reported_name(target: str, reads: Dict[str, Tuple[str, str]]) -> str:
    """The report's name for a read: the layer for ``conv.weight``, the tensor otherwise."""
    stack_path = reads[target][0]
    if reads[target][1] == "lowrank" or stack_path.endswith((".weights", ".biases")) or stack_path in ("weights", "biases"):
        return target.rsplit(".", 1)[0] if "." in target else ""
    return target


def _named_args(node: fx.Node, names: Tuple[str, ...]) -> Dict[str, object]:
    out = dict(zip(names, node.args))
    out.update(node.kwargs)
    return out


_ELEMENTWISE = {operator.mul, operator.add, operator.sub, operator.truediv, torch.mul, torch.add, torch.sub, torch.div}


_ELEMENTWISE_METHODS = {"mul", "add", "sub", "div"}  # x.mul(γ) as well as x * γ
_RESHAPES = {"reshape", "view"}


def _other_operand(user: fx.Node, node: fx.Node):
    """The other tensor operand when ``user`` is a binary elementwise op on ``node``, else None."""
    binary = (user.op == "call_function" and user.target in _ELEMENTWISE) or \
             (user.op == "call_method" and user.target in _ELEMENTWISE_METHODS)
    if binary and len(user.args) == 2 and not user.kwargs:
        a, b = user.args
        other = b if a is node else a if b is node else None
        return other if isinstance(other, fx.Node) and other is not node else None
    return None


def _reshaped_uses(user: fx.Node, node: fx.Node, tensor_shape: tuple):
    """When ``user`` is ``node.reshape(*shape)`` (or ``.view``) that gives the tensor (of
    ``tensor_shape``) a leading broadcast axis of 1, and its every use is a binary elementwise
    op: (shape, [(op, other operand), ...]); else None. A shape computed at run time is
    checked when the model runs (``mix_operand_reshaped``)."""
    if not (user.op == "call_method" and user.target in _RESHAPES and len(user.args) >= 2
            and user.args[0] is node and not user.kwargs and user.users):
        return None
    rest = user.args[1:]
    shape = tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else tuple(rest)
    if tensor_shape and all(isinstance(d, int) for d in shape):
        try:
            if torch.empty(tensor_shape, device="meta").reshape(shape).shape[:1] != (1,):
                return None  # no leading 1 to carry the sample: a per-sample λ splits rows instead
        except RuntimeError:
            return None
    uses = [(u, _other_operand(u, user)) for u in user.users]
    return (shape, uses) if all(o is not None for _, o in uses) else None


def _replace_read(graph: fx.Graph, node: fx.Node, read: Tuple[str, str, tuple], coeffs: fx.Node,
                  split_reasons: List[str]) -> None:
    """Put the mixture in place of one read of a tunable tensor.

    A tensor met by binary elementwise ops gets a per-sample mixture shaped against the other
    operand at run time (``mix_operand``: behind a leading 1 of its own, or in front of it when
    the other operand has more dimensions); any other use takes the mixture whole, which a
    per-sample λ must split by rows for.
    """
    stack_path, mode, shape = read
    with graph.inserting_after(node):
        stack = graph.get_attr(stack_path)
    if mode == "lowrank":  # the layer module itself: its weight is folded at the call's λ
        with graph.inserting_after(stack):
            mixed = graph.call_function(mixed_weight, (stack, coeffs))
        node.replace_all_uses_with(mixed)
        split_reasons.append(f"{node.target} is read whole in the forward")
        return
    users = list(node.users)
    # Any tensor met by one binary elementwise op can go per sample (mix_operand checks the
    # other operand's dimensions when the model runs); a scalar-shaped read (shape ()) too.
    direct = [_other_operand(u, node) for u in users]
    reshaped = [None if d is not None else _reshaped_uses(u, node, tuple(shape)) for u, d in zip(users, direct)]
    if mode != "split" and all(d is not None or r is not None for d, r in zip(direct, reshaped)):
        for user, other, via in zip(users, direct, reshaped):
            if other is not None:  # x * β, β (1, *S'): the mixture gets a sample axis (mix_operand)
                with graph.inserting_before(user):
                    mixed = graph.call_function(mix_operand, (stack, coeffs, other))
                user.replace_input_with(node, mixed)
                continue
            for op, other in via[1]:  # x.mul(γ.reshape(1, -1, 1, 1)): mix first, then reshape
                with graph.inserting_before(op):
                    mixed = graph.call_function(mix_operand_reshaped, (stack, coeffs, via[0], other))
                op.replace_input_with(user, mixed)
            graph.erase_node(user)
        return
    with graph.inserting_after(stack):
        mixed = graph.call_function(mix_parameter, (stack, coeffs, "split"))
    node.replace_all_uses_with(mixed)
    split_reasons.append(f"{node.target} is read whole in the forward")


def _coeffs_placeholder(graph: fx.Graph) -> fx.Node:
    """Add the ``tunify_coeffs=None`` input: after the last ordinary argument and before a
    ``**kwargs`` one (nothing may follow a var-keyword argument)."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    var_kw = next((n for n in placeholders if str(n.target).startswith("**")), None)
    where = graph.inserting_before(var_kw) if var_kw is not None else graph.inserting_after(placeholders[-1])
    with where:
        return graph.placeholder(COEFFS_INPUT, default_value=None)


def _rewrite_functional_calls(graph: fx.Graph, reads: Dict[str, tuple], coeffs: fx.Node, how: Dict[str, str]) -> None:
    """2. functional conv/linear calls whose weight is a tunable tensor → the tunable functional op."""
    def stack_node(target: str, before: fx.Node) -> fx.Node:
        with graph.inserting_before(before):
            return graph.get_attr(reads[target][0])

    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _CONV | _LINEAR:
            continue
        is_conv = node.target in _CONV
        args = _named_args(node, _CONV_ARGS if is_conv else _LINEAR_ARGS)
        weight, bias = args.get("weight"), args.get("bias")
        if not (isinstance(weight, fx.Node) and weight.op == "get_attr" and weight.target in reads) \
                or reads[weight.target][1] == "lowrank":  # low rank: step 3 reads the folded weight
            continue
        bias_is_stack = isinstance(bias, fx.Node) and bias.op == "get_attr" and bias.target in reads
        new_bias = stack_node(bias.target, node) if bias_is_stack else bias
        extra = {k: args[k] for k in ("stride", "padding", "dilation", "groups") if k in args} if is_conv else {}
        with graph.inserting_before(node):
            call = graph.call_function(
                tunable_conv2d if is_conv else tunable_linear,
                (args["input"], coeffs, stack_node(weight.target, node), new_bias),
                dict(extra, bias_is_stack=bias_is_stack),
            )
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        how[_reported_name(weight.target, reads)] = "fx, functional call"


def _feed_layers(graph: fx.Graph, root: nn.Module, coeffs: fx.Node, how: Dict[str, str], split_reasons: List[str]) -> None:
    """1. tunable layers get the coefficients; kept-whole submodules (leaves) read theirs from
    the scope, and their indexed tensors make their owners run by rows."""
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = root.get_submodule(node.target)
        if isinstance(module, TunableModuleLayer):
            node.kwargs = {**node.kwargs, "coeffs": coeffs}
            how.setdefault(node.target, "fx")
            continue
        for sub_name, sub in module.named_modules():
            full = f"{node.target}.{sub_name}" if sub_name else node.target
            if isinstance(sub, TunableModuleLayer):
                how.setdefault(full, f"inside kept-whole {type(module).__name__}")
            plist = getattr(sub, "parametrizations", None)
            if isinstance(plist, nn.ModuleDict):
                for pname, entry in plist.items():
                    if entry and isinstance(entry[0], TunableParameter):
                        how.setdefault(f"{full}.{pname}", f"inside kept-whole {type(module).__name__}")
                        if entry[0].per_sample == "split":  # read in its owner's forward: run by rows
                            split_reasons += mark_row_owners(root, [f"{full}.{pname}"])


def _batch_free_layers(graph: fx.Graph, root: nn.Module, coeffs: fx.Node) -> List[str]:
    """Why per-sample λ must split the batch, for each tunable call on a tensor that depends on
    no input (a table run through a linear, then broadcast over the batch): its rows are not
    samples, so per-sample kernels would mix across them, and silently when their number
    divides by B. Such a call needs each sample's λ on the whole tensor: one run per λ row."""
    batched: set = set()
    reasons = []
    for node in graph.nodes:
        inputs = [n for n in node.all_input_nodes if n is not coeffs]
        if (node.op == "placeholder" and node is not coeffs) or any(n in batched for n in inputs):
            batched.add(node)
        if node.op != "call_module" or node in batched:
            continue
        module = root.get_submodule(node.target)
        if any(isinstance(m, TunableLayer) for m in module.modules()):
            reasons.append(f"{node.target} runs on a tensor that depends on no input (it has no batch axis)")
    return reasons


def rewrite_graph(graph: fx.Graph, root: nn.Module) -> Tuple[fx.GraphModule, Dict[str, str], List[str]]:
    """Patch ``graph`` (traced from ``root`` before its layers were swapped) and build it.

    Returns the GraphModule, how each converted name is reached (name -> "fx", ...), and the
    reasons a per-sample λ must split the batch (empty when it runs natively).
    """
    reads = _stack_reads(root)
    how: Dict[str, str] = {}
    split_reasons: List[str] = []
    coeffs = _coeffs_placeholder(graph)
    _rewrite_functional_calls(graph, reads, coeffs, how)
    # 3. any other read of a tunable tensor
    for node in list(graph.nodes):
        if node.op != "get_attr" or node.target not in reads:
            continue
        if node.users:
            _replace_read(graph, node, reads[node.target], coeffs, split_reasons)
            how.setdefault(_reported_name(node.target, reads), "fx")
        graph.erase_node(node)
    _feed_layers(graph, root, coeffs, how, split_reasons)
    split_reasons += _batch_free_layers(graph, root, coeffs)
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=f"Tunable{type(root).__name__}Graph")
    return gm, how, split_reasons


def resync_attrs(gm: fx.GraphModule, root: nn.Module) -> None:
    """Point the graph's attribute reads (``get_attr``: stacks, buffers, parameters read in the
    forward) at ``root``'s current tensors. A GraphModule holds its own references to them, so
    after ``load_state_dict(..., assign=True)`` replaced them in ``root`` it would read the old ones."""
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        *path, field = node.target.split(".")
        src, dst = root, gm
        for item in path:
            src, dst = getattr(src, item), getattr(dst, item)
        if src is dst:
            continue  # a module the graph shares with root: it reads the current tensor already
        new = getattr(src, field)
        if isinstance(new, nn.Parameter):
            dst._parameters[field] = new
        elif isinstance(new, torch.Tensor):
            dst._buffers[field] = new
        else:
            setattr(dst, field, new)
