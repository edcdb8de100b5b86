"""Per-sample λ on a tunified model: native kernels where they are exact, by rows where not.

``TunableModel`` takes these methods: a call with λ of shape (B, p) runs native per-sample
kernels, the modules owning indexed weight-like tensors by rows (layers/owner_split.py); where
a layer finds its rows do not follow the batch, or code fx could not see breaks on per-sample
kernels, a module around the failure is run by rows instead (owner_search.py), and where that
fails too, every later call runs each distinct λ row on the shared path, with the reason in the
report. Where fx could not look, the first call of each kind is proved against each λ row run
alone (row_proof.py).
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map

from ..layers import quiet, row_owners, scope_reads, split_at_owners, split_by_rows
from .owner_search import executing_at_failure, next_owner
from .owners import owners_summary
from .row_proof import call_kind, prove_native
from .writers import unfused

__all__ = ["PerSampleCalls", "clone_tensor"]

_MAX_NEW_OWNERS = 6  # modules tried at run time before the whole model splits


def clone_tensor(a: Any) -> Any:
    """Tensors cloned, anything else as is: some forwards change their input in place."""
    return a.clone() if isinstance(a, Tensor) else a


class PerSampleCalls:
    """The per-sample half of :class:`~tunify.surgery.model.TunableModel` (which provides
    ``model``, ``_graph``, ``_run``, ``writers``, ``split_reasons`` and ``tunify_report``)."""

    def _run_per_sample(self, args: tuple, kwargs: dict, coeffs: Tensor) -> Any:
        """Native per-sample kernels, the owners of indexed weight-like tensors run by rows
        (layers/owner_split.py); where a layer finds that its rows do not follow the batch
        (ValueError), a module around it is run by rows instead (owner_search.py, a few tries),
        failing which every later call runs each distinct λ row on the shared path.
        Inputs are cloned for each try: some forwards change their input in place."""
        owners = self.__dict__.get("_row_owners")
        if owners is None:  # found once; a deepcopy of the model maps them to its own modules
            owners = self.__dict__["_row_owners"] = row_owners(self.model)
        if (owners or self.writers) and torch.compiler.is_compiling():  # patching forwards has no place in a graph
            return split_by_rows(self._run, coeffs, args, kwargs)
        climbs = 0 if torch.compiler.is_compiling() else _MAX_NEW_OWNERS
        for step in range(climbs + 1):
            try:
                with scope_reads() as reads:
                    out = self._run_by_owners(owners, args, kwargs, coeffs)
                if step:  # owners found at run time (owner_search.py): say so
                    self.tunify_report.per_sample = owners_summary(self.model, owners)
                if self._proved_native(owners, args, kwargs, coeffs, bool(reads)):
                    return out
                return split_by_rows(self._run, coeffs, args, kwargs)
            except Exception as exc:
                if not isinstance(exc, ValueError) and not self._ours(exc, args, kwargs, coeffs):
                    raise  # the call fails at a shared λ too: the input's fault, nothing to fall back to
                error = exc
                if step == climbs:
                    break
                with torch.no_grad():  # which modules were running when it failed
                    stack = executing_at_failure(self.model, lambda: self._run_by_owners(owners, args, kwargs, coeffs))
                found = next_owner(self.model, owners, stack)
                if found is None:
                    break
                owners.append(found)
        reason = f"per-sample kernels cannot follow the batch here ({str(error).splitlines()[0][:240]})"
        if getattr(error, "tensor", ""):  # what a user can do about it
            reason += f"; exclude=[{error.tensor!r}] keeps that tensor plain and the rest per sample"
        self._split_from_now(reason)
        return split_by_rows(self._run, coeffs, args, kwargs)

    def _ours(self, exc: Exception, args: tuple, kwargs: dict, coeffs: Tensor) -> bool:
        """Whether ``exc``, raised by a per-sample call, comes from per-sample kernels (the call
        runs when each λ row runs alone) rather than from the input. Code fx could not see may
        shape a tensor by the batch in a way per-sample kernels break (GFPGAN's constant input,
        repeated by the batch size, then mixed per sample: B² rows); such an error is handled
        like a layer's ValueError. Only where fx could not look: on the traced graph the rewriter
        saw every use, so an error there is the input's own."""
        if self._graph is not None and not self.tunify_report.leaves and not self.writers:
            return False
        try:  # a check only: no autograd, dropout off, buffers (BatchNorm's statistics) put back
            with torch.no_grad(), quiet(self.model, tree_flatten((args, kwargs))[0]):
                split_by_rows(self._run, coeffs, tree_map(clone_tensor, args), tree_map(clone_tensor, kwargs))
        except Exception:
            return False
        return True

    def _split_from_now(self, reason: str) -> None:
        """Every later per-sample call runs each distinct λ row on the shared path, and says why."""
        self.split_reasons.append(reason)
        self.tunify_report.per_sample = f"exact, by running each distinct λ row on the shared path ({reason})"

    def _proved_native(self, owners: list, args: tuple, kwargs: dict, coeffs: Tensor, read_scope: bool) -> bool:
        """Whether native per-sample kernels may stand for this kind of call (row_proof.py):
        always on the traced graph alone, or where no code outside it read λ (``read_scope``:
        whether the run read the coefficient scope, as kept-whole submodules and weight-like
        tensors do); where fx could not look, once checked against each λ row run alone.
        False records the reason: every later call runs by rows."""
        if self._graph is not None and not self.writers and (not self.tunify_report.leaves or not read_scope):
            return True
        if torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None:
            return True
        proved = self.__dict__.setdefault("_native_proofs", set())
        kind = call_kind(args, kwargs, coeffs)
        if kind in proved:
            return True
        reason = prove_native(self.model, lambda: self._run_by_owners(owners, args, kwargs, coeffs),
                              lambda: split_by_rows(self._run, coeffs, tree_map(clone_tensor, args), tree_map(clone_tensor, kwargs)),
                              tree_flatten((args, kwargs))[0])
        if not reason:
            proved.add(kind)
            return True
        if self.writers:
            reason += f"; the blocks that write a weight in the forward ({', '.join(self.writers[:3])}) ran unfused"
        self._split_from_now(reason)
        return False

    def _run_by_owners(self, owners: list, args: tuple, kwargs: dict, coeffs: Tensor) -> Any:
        by_rows = split_at_owners(owners, self.__dict__.setdefault("_row_proofs", {})) if owners else contextlib.nullcontext()
        with by_rows, unfused(self.model, self.writers):
            return self._run(*tree_map(clone_tensor, args), coeffs=coeffs, **tree_map(clone_tensor, kwargs))
