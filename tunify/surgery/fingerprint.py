"""What identifies a base network's weights, whatever file or URL they came from.

An adapter-only checkpoint (a low-rank model saved without its frozen base) is only right on
top of the exact weights it was trained from. Files differ in layout (wrappers, ncnn, fp16 on
disk) for the same weights, so the identity is taken over the loaded ``state_dict`` itself:

    tensor digest = sha256(dtype, shape, raw bytes of the contiguous CPU tensor)
    base sha256   = sha256 over the state dict's names in sorted order, each with its digest

The per-tensor digests are kept too: saving an adapter drops every tensor of the tunable
model that still equals the base's (frozen weights, untouched buffers such as attention
masks) and keeps everything training changed (norms, when they trained).
"""
from __future__ import annotations

import hashlib
from typing import Dict, Mapping

import torch
from torch import Tensor, nn

__all__ = ["tensor_digest", "state_fingerprint"]


def tensor_digest(tensor: Tensor) -> str:
    """sha256 hex of a tensor's dtype, shape and bytes (device and strides do not count)."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def state_fingerprint(model_or_state) -> Dict[str, object]:
    """{"sha256": hex of the whole state dict, "tensors": {name: tensor digest}}.

    model_or_state: an nn.Module (its state_dict: parameters and persistent buffers) or a
    mapping name → tensor.
    """
    state: Mapping[str, Tensor] = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    digests = {name: tensor_digest(t) for name, t in state.items() if isinstance(t, Tensor)}
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}={digests[name]};".encode())
    return {"sha256": h.hexdigest(), "tensors": digests}
