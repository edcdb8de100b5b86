"""Which exact per-sample form a layer runs, chosen by measuring them.

A conv or linear layer can take a per-sample λ in several exact ways (conv.py, linear.py):
build each sample's kernel and fold the batch into a grouped convolution or a batched
matmul, or run one plain call per sample, or run all K kernels and mix their K outputs per
sample. Which is fastest depends on
the shape, the memory format, the device and on whether a backward follows: on a few pixels
the K outputs win; a depthwise conv fed channels_last maps, which the folded form must copy
into NCHW and whose B·C-group weight gradient is slow, often runs faster as K plain convs.
A fixed pixel count cannot tell these apart, so the first call of each signature (shapes,
memory format, dtype, device, with or without a backward) times every candidate on its own
inputs, a forward plus its backward where autograd records one, and the fastest stands for
the rest of the process, as ``torch.backends.cudnn.benchmark`` does for cuDNN.

Where a timing would mean nothing (compiling, a jit trace, inside vmap) or with
``TUNIFY_AUTOTUNE=0`` in the environment / :func:`autotune` (False), a static rule picks.
Every form is exact; they differ in rounding only (tests/test_layers.py checks each).
"""
from __future__ import annotations

import contextlib
import os
import time
from contextvars import ContextVar
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch import Tensor

__all__ = ["autotune", "choose_form", "clear_form_choices", "form_choices", "form_state", "forced_form",
           "load_form_state", "needs_backward"]

_ENABLED = [os.environ.get("TUNIFY_AUTOTUNE", "1") != "0"]
_CHOICES: Dict[tuple, str] = {}
# Choices a checkpoint brought back (load_form_state), by the repr of their signature: taken up
# on the first call of that signature instead of measuring, so a resumed run computes exactly
# what the run it continues computed (forms differ in rounding).
_RESTORED: Dict[str, str] = {}
_FORCED: ContextVar[Optional[str]] = ContextVar("tunify_forced_form", default=None)
_PLAIN = (Tensor, torch.nn.Parameter)
_REPEATS = 3  # timed runs per candidate after one warm-up; the minimum counts


def autotune(enabled: bool) -> None:
    """Measure per-sample forms on their first call (the default), or always use the static rule
    (choices measured so far are set aside, and stand again when it is switched back on)."""
    _ENABLED[0] = bool(enabled)


def clear_form_choices() -> None:
    """Forget every measured or restored choice (they are per process; a new machine load may differ)."""
    _CHOICES.clear()
    _RESTORED.clear()


def form_state() -> List[List[str]]:
    """The choices so far as [signature repr, form] pairs (JSON-able): what a training
    checkpoint stores, so that its resumed run takes the same forms."""
    pairs = {**_RESTORED, **{repr(k): v for k, v in _CHOICES.items()}}  # a restored choice taken up is in both
    return [[k, v] for k, v in pairs.items()]


def load_form_state(pairs: List[List[str]]) -> None:
    """Take up the choices of :func:`form_state` (a resumed run): each stands, unmeasured, from
    the first call of its signature."""
    _RESTORED.update({str(k): str(v) for k, v in pairs})


def form_choices() -> Dict[tuple, str]:
    """The measured choices so far: signature → form name (a copy)."""
    return dict(_CHOICES)


@contextlib.contextmanager
def forced_form(name: str) -> Iterator[None]:
    """Inside, every layer that has a form called ``name`` runs it (tests, benchmarks)."""
    token = _FORCED.set(name)
    try:
        yield
    finally:
        _FORCED.reset(token)


def _can_time(inputs: tuple) -> bool:
    return (torch._C._get_tracing_state() is None
            and torch._C._functorch.maybe_current_level() is None
            and all(type(t) in _PLAIN for t in inputs if isinstance(t, Tensor)))  # no fake or wrapped tensors


def _timed(fn: Callable[..., Tensor], inputs: tuple, grad: bool) -> float:
    """Seconds for one run of ``fn(*inputs)`` (best of a few), with its backward when ``grad``."""
    if grad:  # leaves of their own: the timing must not reach the caller's graph
        inputs = tuple(t.detach().requires_grad_(t.requires_grad) if isinstance(t, Tensor) else t for t in inputs)
    cuda = any(isinstance(t, Tensor) and t.is_cuda for t in inputs)
    held: list = []

    def once() -> None:
        y = fn(*inputs)
        if grad:
            if not held:
                held.append(torch.ones_like(y))  # no RNG: the caller's draws stay as they were
            torch.autograd.backward(y, held[0])

    once()
    best = float("inf")
    for _ in range(_REPEATS):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        once()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def needs_backward(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd records this call (its timing then includes the backward)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def choose_form(key: tuple, forms: Dict[str, Callable[..., Tensor]], names: tuple, inputs: tuple,
                static: str) -> str:
    """The name (one of ``names``) of the form to run: forced, measured before for ``key``,
    measured now, or ``static`` where measuring is off or meaningless (and always while
    compiling, so that every compiled graph holds for any later call).

    ``forms[name](*inputs)`` runs a form (all exact); ``key`` is the call's signature, everything
    the timings depend on (shapes, strides, dtype, device, whether a backward follows, and the
    layer's geometry); the caller builds it, as this runs on every per-sample call."""
    if torch.compiler.is_compiling():  # a graph must not guard on the table, which later calls fill
        return static
    forced = _FORCED.get()
    if forced is not None and forced in names:
        return forced
    if not _ENABLED[0]:  # measured choices are set aside, kept for when it is on again
        return static
    found = _CHOICES.get(key)
    if found is not None:
        return found
    if _RESTORED:
        found = _RESTORED.get(repr(key))
        if found in names:
            _CHOICES[key] = found
            return found
    if len(names) == 1 or not _can_time(inputs):
        return static
    grad = needs_backward(*(t for t in inputs if isinstance(t, Tensor)))
    times = {name: _timed(forms[name], inputs, grad) for name in names}
    _CHOICES[key] = found = min(times, key=times.get)
    return found
