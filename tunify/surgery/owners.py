"""Which weight-like tensors a per-sample λ follows by running only their owner by rows.

A tensor that cannot hold one value per sample (SwinIR's relative-position bias table, read
inside ``WindowAttention.forward`` where no graph sees it) used to make the whole model run
once per distinct λ row. Now its owner alone is (``layers.owner_split``): the tensor is marked
``per_sample="rows"``. A tensor the root module owns stays a whole-model split (running the
root by rows is that split), and so does any read the traced graph makes itself.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from ..layers import ROWS, TunableParameter, row_owners

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


def owners_summary(root: nn.Module) -> str:
    """The report's per-sample line when owners run by rows ('' when there are none)."""
    owners = row_owners(root)
    if not owners:
        return ""
    kinds: Dict[str, set] = {}
    for _, module in owners:
        for pname, entry in module.parametrizations.items():
            if entry and isinstance(entry[0], TunableParameter) and entry[0].per_sample == ROWS:
                kinds.setdefault(type_before_parametrizations(module).__name__, set()).add(f"{pname} {entry[0].shape}")
    counts = {k: sum(type_before_parametrizations(m).__name__ == k for _, m in owners) for k in kinds}
    shown = "; ".join(f"{counts[k]} x {k} ({', '.join(sorted(v)[:3])})" for k, v in kinds.items())
    return (f"native, except the modules owning indexed or reshaped weight-like tensors, each run once per "
            f"distinct λ row on its own rows of the batch ({shown}); proved exact on the first per-sample call")
