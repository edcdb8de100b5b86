"""The tunified model: the converted network plus λ handling, and ``bake``."""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from ..lam import LamLike, LamSpace
from ..layers import TunableModuleLayer, coeff_scope, mix, split_by_rows
from .baked_part import strip_tunable_parametrizations, swap_children
from .config import TunifyConfig
from .fast import fast_eligible, fast_for
from .graph import COEFFS_INPUT, resync_attrs
from .hooks import hook_memo, inlined_hook_dicts, move_hooks
from .per_sample import PerSampleCalls
from .report import TunifyReport

__all__ = ["TunableModel", "bake"]

_MISS = object()  # the fast graph declined this call


def _first_batch(args: tuple, kwargs: dict) -> Optional[int]:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, Tensor) and a.dim() > 0:
            return a.shape[0]
    return None


class _AfterLoad:
    """A load_state_dict post hook of the model and of its network: an ``assign=True`` load brings
    new tensor objects, which the traced graph's attribute reads and the fast graph must follow.
    An object holding the model, not a closure, so a deep copy's hooks hold the copy."""

    def __init__(self, tm: "TunableModel") -> None:
        self.tm = tm

    def __call__(self, module: nn.Module, incompatible_keys: Any) -> None:
        tm = self.tm
        tm.__dict__.pop("_ref_param", None)
        tm._drop_fast()
        for gm, _ in tm._graphs:
            resync_attrs(gm, tm.model)


def _memo_key(lam: Any, batch: Optional[int], ref: Tensor) -> Optional[tuple]:
    """What identifies a λ for ``TunableModel.coefficients``' memo, or None (not memoised):
    numbers in (nested) lists/tuples by value, a tensor by identity and version counter."""
    where = (batch, ref.device, ref.dtype)
    if isinstance(lam, Tensor):
        return None if lam.requires_grad else ("tensor", id(lam), lam._version, *where)
    if isinstance(lam, (list, tuple)):
        flat = _numbers(lam)
        return None if flat is None else ("seq", flat, *where)
    return None


def _numbers(seq: Any) -> Optional[tuple]:
    """(Nested) lists/tuples of plain numbers as nested tuples of floats; None otherwise."""
    out = []
    for v in seq:
        if isinstance(v, (list, tuple)):
            v = _numbers(v)
            if v is None:
                return None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            v = float(v)
        else:
            return None
        out.append(v)
    return tuple(out)


class TunableModel(PerSampleCalls, nn.Module):
    """A network whose behaviour follows a control vector λ given at call time.

    ``tm(*inputs, lam=λ)`` with λ of shape (B, p) (one row per sample) or (p,) / a list
    (shared by the batch). Attributes and methods of the original model are reachable on
    ``tm`` (calls that run layers need ``with tm.lam_scope(λ):``). The converted network is
    ``tm.model``; its state_dict holds each tunable tensor as a stack of kernels. What the
    model is (objectives, how its architecture is rebuilt, recipe, metrics) is ``tm.config``,
    a :class:`TunifyConfig`; what conversion did is ``tm.tunify_report``.
    """

    def __init__(self, model: nn.Module, space: LamSpace, graphs: list, split_reasons: list,
                 report: TunifyReport, config: Optional[TunifyConfig] = None, writers: tuple = ()):
        super().__init__()
        self.model = model
        self.lam_space = space
        self.tunify_report = report
        # What the model is and how to rebuild it (surgery/config.py): saved as config.json.
        self.config = config if config is not None else TunifyConfig(space.names, space.kind, path=report.path)
        self.split_reasons = list(split_reasons)
        # Modules whose forward writes a layer's weight (writers.py): per-sample λ runs them unfused.
        self.writers = tuple(writers)
        self._default_lam: Optional[LamLike] = None
        # The traced graphs share every module with self.model; kept unregistered so the
        # state_dict, .parameters() and .to() see each tensor once. One per training mode the
        # forward tells apart (tracer.py): (graph, ((module, flag), ...) it was traced at).
        if isinstance(graphs, nn.Module) or graphs is None:  # one graph, or none: the module path
            graphs = [] if graphs is None else [(graphs, ())]
        object.__setattr__(self, "_graphs", [(gm, tuple(modes)) for gm, modes in graphs])
        # assign=True loads bring new tensor objects. On the network, so loads through tm.model
        # see it too; a load through tm recurses into the network and fires it once.
        model.register_load_state_dict_post_hook(_AfterLoad(self))

    def _apply(self, fn, recurse: bool = True):  # .to(), .half(), .cuda(): the graph's own constants too
        self.__dict__.pop("_ref_param", None)
        self._drop_fast()  # rebuilt on the converted tensors
        super()._apply(fn, recurse)
        for gm, _ in self._graphs:
            gm._apply(fn, recurse)  # shared tensors were already converted: a no-op for them
        return self

    def _drop_fast(self) -> None:
        self.__dict__.pop("_fast", None)
        self.__dict__.pop("_fast_graph", None)

    @property
    def _graph(self) -> Optional[nn.Module]:
        """The traced graph for the modules' current training flags; None on the module path,
        in a mix of flags no graph was traced at, or once a module the graph inlined has hooks
        (registered after tracing: the graph cannot run them). Those calls run the module path,
        which is exact."""
        graphs = self.__dict__["_graphs"]
        if len(graphs) == 1 and not graphs[0][1]:  # the usual case: no flag consulted
            return self._unless_hooked(graphs[0][0])
        for gm, modes in graphs:
            if all(m.training == flag for m, flag in modes):
                return self._unless_hooked(gm)
        return None

    def _unless_hooked(self, gm: nn.Module) -> Optional[nn.Module]:
        cache = self.__dict__.get("_inlined_hooks")
        dicts = None if cache is None else cache.get(id(gm))
        if dicts is None:  # found once per graph; the check below runs on every call
            dicts = self.__dict__.setdefault("_inlined_hooks", {})[id(gm)] = inlined_hook_dicts(gm, self.model)
        return None if any(dicts) else gm

    # -- what the model is -----------------------------------------------------------------
    @property
    def objectives(self) -> tuple:
        """The p objective names, in λ order."""
        return self.lam_space.names

    @property
    def p(self) -> int:
        return self.lam_space.p

    def extra_repr(self) -> str:
        r = self.tunify_report
        return (
            f"objectives={self.objectives}, lam_space={self.lam_space.kind!r}, path={r.path!r}, "
            f"converted={len(r.converted)}, skipped={len(r.skipped)}"
        )

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Dunder lookups (__deepcopy__, __getstate__, ...) are the model's own protocol: a
            # parametrized network's __deepcopy__ found here would make copy.deepcopy(tm) return
            # a copy of the network instead of the tunable model.
            if name in ("model", "_graph", "_graphs") or "model" not in self._modules or name.startswith("__"):
                raise
            return getattr(self._modules["model"], name)

    # -- λ -------------------------------------------------------------------------------------
    def _ref(self) -> Tensor:
        # Found once (walking the parameters costs ~20 µs a call); .to()/.half() keep the same
        # Parameter objects, and _apply forgets it anyway, so its device and dtype stay current.
        ref = self.__dict__.get("_ref_param")
        if ref is None:
            ref = next((t for t in self.model.parameters() if t.is_floating_point()), torch.empty(0))
            self.__dict__["_ref_param"] = ref
        return ref

    def reference_tensor(self) -> Tensor:
        """A floating-point parameter of the model: its device and dtype are the model's."""
        return self._ref()

    def run_coefficients(self, *args: Any, coeffs: Tensor, **kwargs: Any) -> Any:
        """The forward at kernel coefficients ``coeffs`` (K,) with no check on them: what an
        exported graph runs (λ validation branches on values, which a trace cannot hold)."""
        return self._run(*args, coeffs=coeffs, **kwargs)

    def validate_lam(self, lam: LamLike, batch: Optional[int] = None) -> Tensor:
        """λ as a tensor (p,) or (B, p) on the model's device; ValueError if it is invalid."""
        ref = self._ref()
        return self.lam_space.validate(lam, batch, device=ref.device, dtype=ref.dtype)

    def coefficients(self, lam: LamLike, batch: Optional[int] = None) -> Tensor:
        """Mixing coefficients of the layers for λ: (K,) or (B, K); identical rows collapse
        to one shared row so a batch run at one λ takes the fast path.

        The last call's result is kept: checking λ costs about 0.1 ms (several small tensor
        ops and host syncs), as much as a small forward. It is reused only for an equal
        list/tuple λ, or for the very same tensor object not modified since (its version
        counter), at the same batch size, space, device and dtype."""
        lam = self._default_lam if lam is None else lam
        ref = self._ref()
        key = None if torch.compiler.is_compiling() else _memo_key(lam, batch, ref)  # a compiled graph must not guard on ids
        memo = self.__dict__.get("_coeff_memo")
        if key is not None and memo is not None and memo[0] == key and memo[2] is self.lam_space \
                and (not isinstance(lam, Tensor) or memo[3] is lam) \
                and (not memo[1].is_inference() or torch.is_inference_mode_enabled()):  # autograd refuses those
            return memo[1]
        valid = self.lam_space.validate(lam, batch, device=ref.device, dtype=ref.dtype)
        if valid.dim() == 2 and bool((valid == valid[:1]).all()):
            valid = valid[0]
        coeffs = self.lam_space.coefficients(valid)
        if key is not None:  # the tensor itself is held, so its id cannot be reused by another
            self.__dict__["_coeff_memo"] = (key, coeffs, self.lam_space, lam if isinstance(lam, Tensor) else None)
        return coeffs

    def set_default_lam(self, lam: Optional[LamLike]) -> None:
        """λ used when a call gives none (None: λ is required on every call)."""
        self._default_lam = None if lam is None else self.validate_lam(lam)

    @contextlib.contextmanager
    def lam_scope(self, lam: LamLike) -> Iterator[None]:
        """Run direct calls of submodules or methods (``tm.forward_features``) at λ."""
        with coeff_scope(self.coefficients(lam)):
            yield

    # -- forward -------------------------------------------------------------------------------
    def forward(self, *args: Any, lam: Optional[LamLike] = None, group_by_lam: bool = False, **kwargs: Any) -> Any:
        """Run at λ ((B, p) or (p,)). ``group_by_lam`` runs each distinct λ row as a shared-λ
        sub-batch even where per-sample kernels are native (fast when rows repeat)."""
        coeffs = self.coefficients(lam, _first_batch(args, kwargs))
        graph = self._graph
        off_graph = graph is not None and not self._graph_takes(args, kwargs, graph)
        if coeffs.dim() == 2 and (self.split_reasons or group_by_lam or off_graph):
            return split_by_rows(self._run, coeffs, args, kwargs)
        if coeffs.dim() == 1:
            return self._run(*args, coeffs=coeffs, **kwargs)
        return self._run_per_sample(args, kwargs, coeffs)

    def _graph_takes(self, args: tuple, kwargs: dict, graph: Any = _MISS) -> bool:
        """Whether the traced graph (``graph``: the current one, looked up when not given) can
        run this call: it fixed every argument with a default (and any ``**kwargs``) at trace
        time, so a call that gives one runs the module path."""
        graph = self._graph if graph is _MISS else graph
        free = getattr(self, "graph_inputs", None)
        if graph is None or free is None:
            return graph is not None
        return len(args) <= len(free) and all(k in free[len(args):] for k in kwargs)

    def _run(self, *args: Any, coeffs: Tensor, **kwargs: Any) -> Any:
        with coeff_scope(coeffs):
            graph = self._graph  # this mode's, looked up once per call
            on_graph = self._graph_takes(args, kwargs, graph)
            if fast_eligible(coeffs) and (on_graph or graph is None):
                out = self._run_fast(args, kwargs, coeffs, graph)
                if out is not _MISS:
                    return out
            if on_graph:
                return graph(*args, **kwargs, **{COEFFS_INPUT: coeffs})
            return self.model(*args, **kwargs)

    def _run_fast(self, args: tuple, kwargs: dict, coeffs: Tensor, graph: Optional[nn.Module]) -> Any:
        """``graph`` with plain convs and linears and the kept-whole blocks baked, or an untraced
        network baked whole, at a shared λ (fast.py); built on the second such call, and again
        when the mode picks another graph; ``_MISS`` when this call must run the layers."""
        fast = self.__dict__.get("_fast")
        if fast is None or self.__dict__.get("_fast_graph") is not graph:
            seen = self.__dict__["_fast_seen"] = self.__dict__.get("_fast_seen", 0) + 1
            if seen < 2:  # a model called once per λ never pays for building it
                return _MISS
            try:
                fast = fast_for(graph, self.model)
            except Exception:  # an optimisation only: a model it cannot copy runs as it is
                fast = None
            self.__dict__["_fast"], self.__dict__["_fast_graph"] = fast or False, graph
            fast = fast or False
        if fast is False:
            return _MISS
        out = fast.run(args, kwargs, coeffs, COEFFS_INPUT)
        return _MISS if out is None else out

    def bake(self, lam: LamLike) -> nn.Module:
        """See :func:`bake`."""
        return bake(self, lam)

    #: how :meth:`save_pretrained` writes a folder: set by tunify.publishing, which builds on
    #: surgery (surgery never imports it)
    save_hook: Optional[Callable[..., Any]] = None

    def save_pretrained(self, folder, **kwargs: Any):
        """Write a self-describing folder (see :func:`tunify.save_pretrained`)."""
        if TunableModel.save_hook is None:
            raise ImportError("save_pretrained is tunify.publishing's: import tunify (or tunify.publishing) first")
        return TunableModel.save_hook(self, folder, **kwargs)


@torch.no_grad()
def bake(tm: TunableModel, lam: LamLike) -> nn.Module:
    """Fold one λ (p,) into an ordinary module with the original layer types.

    The result is a plain copy of the original model (same class, same parameter names) whose
    output equals ``tm(x, lam=λ)``, at the original's cost.
    """
    lam = tm.validate_lam(lam)
    if lam.dim() != 1:
        raise ValueError(f"bake folds one λ of shape ({tm.p},); got shape {tuple(lam.shape)}")
    coeffs = tm.lam_space.coefficients(lam)
    plain = copy.deepcopy(tm.model, hook_memo(tm.model))
    if isinstance(plain, TunableModuleLayer):
        return move_hooks(plain, plain.to_plain(coeffs))
    swap_children(plain, lambda c: isinstance(c, TunableModuleLayer), lambda c: move_hooks(c, c.to_plain(coeffs)))
    for module in list(plain.modules()):
        strip_tunable_parametrizations(module, lambda name, stack: mix(stack, coeffs).clone())
    return plain
