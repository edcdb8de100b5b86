"""Which weight-like tensors a per-sample λ follows by running only their owner by rows.

A tensor that cannot hold one value per sample (SwinIR's relative-position bias table, read
inside ``WindowAttention.forward`` where no graph sees it) used to make the whole model run
once per distinct λ row. Now its owner alone is (``layers.owner_split``): the tensor is marked
``per_sample="rows"``. A tensor the root module owns stays a whole-model split (running the
root by rows is that split), and so does any read the traced graph makes itself.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from ..layers import ROWS, TunableParameter, row_owners, row_tensors

__all__ = ["mark_row_owners", "owners_summary"]


def mark_row_owners(root: nn.Module, names: Sequence[str]) -> List[str]:
    """Mark each named tensor (a TunableParameter with ``per_sample="split"``) as run by its
    owner's rows; returns the whole-model split reasons of those the root owns."""
    reasons = []
    for name in names:
        owner_name, _, pname = name.rpartition(".")
        tp: TunableParameter = root.get_submodule(owner_name).parametrizations[pname][0]
        if tp.per_sample != "split":
            continue
        if owner_name:
            tp.per_sample = ROWS
        else:
            reasons.append(f"{name} has shape {tp.shape}")
    return reasons


def owners_summary(root: nn.Module, owners: Optional[Sequence[Tuple[str, nn.Module]]] = None) -> str:
    """The report's per-sample line when owners run by rows ('' when there are none).
    ``owners``: all of them, those found at run time included (default: the marked ones)."""
    owners = row_owners(root) if owners is None else list(owners)
    if not owners:
        return ""
    kinds: Dict[str, set] = {}
    found = []
    for name, module in owners:
        kind = type_before_parametrizations(module).__name__
        tensors = [f"{p} {tp.shape}" for p, tp in row_tensors(module)]
        if tensors:
            kinds.setdefault(kind, set()).update(tensors)
        else:
            found.append(f"{name} ({kind})")
    counts = {k: sum(type_before_parametrizations(m).__name__ == k for _, m in owners) for k in kinds}
    shown = "; ".join(f"{counts[k]} x {k} ({', '.join(sorted(v)[:3])})" for k, v in kinds.items())
    if found:
        shown += ("; " if shown else "") + f"found at run time, where per-sample kernels could not follow: {', '.join(found[:3])}" \
            + (f" +{len(found) - 3} more" if len(found) > 3 else "")
    return (f"native, except the modules owning indexed or reshaped weight-like tensors, each run on its own "
            f"rows of the batch at each sample's λ, vmapped over samples or once per distinct λ row ({shown}); "
            f"proved exact on the first per-sample call")
