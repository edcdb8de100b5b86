"""Export a tunable model for deployment: ONNX or torch.export (``.pt2``), λ live or baked.

With ``lam=None`` the exported program takes ``image`` (B, C, H, W) and ``lam`` (p,) (one λ
shared by the batch) and returns ``output``; the graph maps λ to the mixing coefficients
itself (simplex: ω = λ, box: ω = (1, λ)) and mixes the kernels on every call. λ is NOT
validated inside the graph (that would need data-dependent control flow): callers must pass
a valid λ (simplex: entries ≥ 0 summing to 1; box: entries in [0, 1]). With ``lam`` given,
the model is baked at that λ (:func:`tunify.bake`) and takes ``image`` only.

Dynamic in both formats: batch, height and width of ``image`` (output axes follow), unless
the model fixes an axis (a warning names it; :func:`describe_export` shows the sizes). ``lam``
is static (p,). Both formats come from one ``torch.export`` program; ONNX via the dynamo-based
exporter (needs onnxscript), so both share one graph and one account of the dynamic axes. The
TorchScript exporter (``dynamo=False``) still runs on torch 2.14 but is deprecated and its
``torch.jit`` trace records Python shape arithmetic as constants.
"""
from __future__ import annotations

import contextlib
import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .lam import LamLike, lam_grid
from .surgery import TunableModel, bake

__all__ = ["FORMATS", "ExportMismatch", "LamInput", "export_model", "check_export", "describe_export", "export_command"]

FORMATS = ("onnx", "torch-export")
IMAGE, LAM, OUTPUT = "image", "lam", "output"
CONFIG_ENTRY = "tunify_config"  # the model's TunifyConfig as JSON, in ONNX metadata_props or a .pt2 extra file
_AXES = {0: "batch", 2: "height", 3: "width"}  # dynamic axes of the image, by position


class ExportMismatch(ValueError):
    """The exported model disagrees with the eager tunable model beyond the tolerance."""


class LamInput(nn.Module):
    """``tm`` with λ as a plain tensor input: forward(image (B, C, H, W), lam (p,)) → output.

    Computes the coefficients (K,) from λ in the graph and runs the shared-λ path; no checks
    on λ, so that nothing depends on its values at trace time.
    """

    def __init__(self, tm: TunableModel) -> None:
        super().__init__()
        self.tm = tm

    def forward(self, image: Tensor, lam: Tensor) -> Tensor:
        # not tm(...): tm.forward validates λ with Python branches on its values.
        return self.tm.run_coefficients(image, coeffs=self.tm.lam_space.coefficients(lam))


class _ImageOnly(nn.Module):
    """A baked model with the input named ``image``: forward(image (B, C, H, W)) → output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block (dropout off, norms frozen), then each submodule's own mode
    again (a fresh wrapper is in training mode; restoring it alone would flip the model)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


def _oblivious() -> contextlib.AbstractContextManager:
    # Without size-oblivious reasoning, pad-then-crop models (NAFNet) get guards on whether
    # the crop is contiguous, i.e. on the parity of H and W at the example size.
    try:
        import torch.fx.experimental._config as fx_config

        return fx_config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError, TypeError):  # a torch without the switch
        return contextlib.nullcontext()


def _symbolic_axes(ep: "torch.export.ExportedProgram") -> Dict[str, str]:
    """Symbol name (``s0``) → axis name (``batch``) for the dynamic axes of the image."""
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == IMAGE)
    return {str(d): _AXES[i] for i, d in enumerate(node.meta["val"].shape) if i in _AXES and _symbolic(d)}


def _symbolic(d: Any) -> bool:  # a specialised axis can stay a SymInt whose expression is "16"
    return isinstance(d, torch.SymInt) and not str(d).isdigit()


def _export_program(module: nn.Module, args: Tuple[Tensor, ...], dynamic: bool) -> "torch.export.ExportedProgram":
    auto = torch.export.Dim.AUTO  # AUTO, not named Dims: an axis the model fixes is specialised, not an error
    shapes = ({i: auto for i in _AXES} if dynamic else None,) + (None,) * (len(args) - 1)
    with _oblivious():
        ep = torch.export.export(module, args, dynamic_shapes=shapes)
    fixed = [name for name in _AXES.values() if name not in _symbolic_axes(ep).values()]
    if dynamic and fixed:
        warnings.warn(f"export: the model fixes the image axes {fixed} at the example size "
                      f"{tuple(args[0].shape)}; they are static in the exported file", stacklevel=3)
    return ep


def export_model(tm: TunableModel, path: Union[str, Path], format: str = "onnx", lam: Optional[LamLike] = None,
                 example_size: Sequence[int] = (1, 3, 64, 64), dynamic: bool = True, opset: Optional[int] = None) -> Path:
    """Write ``tm`` to ``path`` as ONNX (``format="onnx"``) or a torch.export ``.pt2`` file.

    ``lam=None``: inputs ``image`` (B, C, H, W) and ``lam`` (p,) (pass a valid λ: it is not
    checked in the graph). ``lam`` given: the model baked at λ, input ``image`` only. The output
    is ``output``. ``dynamic``: batch, height and width are dynamic (a batch of 1 in
    ``example_size`` is traced as 2 so it stays dynamic); if the dynamic trace fails the model
    is exported static, with a warning. Returns the path; :func:`describe_export` tells the
    shapes. Raises RuntimeError naming the failure (and suggesting ``lam=``) otherwise.
    """
    fmt, path = _format(format), Path(path)
    ref = tm.reference_tensor()
    centre = torch.full((tm.p,), 1.0 / tm.p if tm.lam_space.kind == "simplex" else 0.5).to(ref.device, ref.dtype)
    module = LamInput(tm) if lam is None else _ImageOnly(bake(tm, lam))

    def example(size: Sequence[int]) -> Tuple[Tensor, ...]:
        x = torch.rand(tuple(size), device=ref.device, dtype=ref.dtype)
        return (x, centre) if lam is None else (x,)

    with _eval(module):
        try:
            try:
                # A batch of 1 would be specialised by torch.export's 0/1 rule: trace with 2.
                args = example([max(2, example_size[0]), *example_size[1:]] if dynamic else example_size)
                ep = _export_program(module, args, dynamic)
            except Exception as exc:
                if not dynamic:
                    raise
                warnings.warn(f"export: dynamic shapes failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                              f"exporting with the static size {tuple(example_size)}", stacklevel=2)
                args = example(example_size)
                ep = _export_program(module, args, False)
        except Exception as exc:
            hint = " Pass lam=... to export the model baked at one λ (plain layers, no scope)." if lam is None else ""
            raise RuntimeError(f"torch.export could not trace the {tm.tunify_report.path!r}-path model "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}).{hint}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    # What the file is travels inside it: objectives, what each corner means, λ space, architecture.
    meta = json.dumps({**tm.config.to_dict(), "baked_at": None if lam is None else tm.validate_lam(lam).tolist()})
    if fmt == "torch-export":
        torch.export.save(ep, str(path), extra_files={CONFIG_ENTRY: meta})
        return path
    with _oblivious():
        program = torch.onnx.export(ep, args, input_names=[IMAGE, LAM][: len(args)], output_names=[OUTPUT],
                                    opset_version=opset, dynamo=True, verbose=False)
    program.save(str(path))  # weights go to a side file only past protobuf's 2 GB limit
    _finish_onnx(path, _symbolic_axes(ep), meta)
    return path


def _finish_onnx(path: Path, names: Dict[str, str], meta: str) -> None:
    """Give the exporter's symbolic dims (``s0``, ``2*s1``) the names batch/height/width, and
    store the model's config as the metadata entry ``tunify_config``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # the weights stay where they are
    entry = model.metadata_props.add()
    entry.key, entry.value = CONFIG_ENTRY, meta
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param.isdigit():  # an axis the trace specialised
                dim.dim_value = int(dim.dim_param)
            elif dim.dim_param:
                dim.dim_param = _rename(dim.dim_param, names)
    onnx.save(model, str(path))


def _rename(expr: str, names: Dict[str, str]) -> str:
    """``Min(s1, 2*s1)`` → ``Min(height, 2*height)``: whole symbol names only (s1, not s10)."""
    return re.sub(r"\b(s\d+)\b", lambda m: names.get(m.group(1), m.group(1)), expr)


def describe_export(path: Union[str, Path], format: str) -> Dict[str, Any]:
    """Inputs and outputs of an exported file: name → shape (ints, or names of dynamic axes),
    the dynamic axes (``image.batch``, ...), and the ONNX opset."""
    fmt, path = _format(format), Path(path)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        shape = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
        inputs = {v.name: shape(v) for v in model.graph.input}
        outputs = {v.name: shape(v) for v in model.graph.output}
        info: Dict[str, Any] = {"opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}
        meta = {p.key: p.value for p in model.metadata_props}.get(CONFIG_ENTRY)
    else:
        extra = {CONFIG_ENTRY: ""}
        ep = torch.export.load(str(path), extra_files=extra)
        meta = extra[CONFIG_ENTRY] or None
        names = _symbolic_axes(ep)
        shape = lambda t: [_rename(str(d), names) if _symbolic(d) else int(d) for d in t.shape]  # noqa: E731
        user = set(ep.graph_signature.user_inputs)
        inputs = {n.name: shape(n.meta["val"]) for n in ep.graph.nodes if n.op == "placeholder" and n.name in user}
        out = next(n for n in ep.graph.nodes if n.op == "output").args[0]
        outputs = {OUTPUT: shape(out[0].meta["val"])}
        info = {}
    named = {name: [d for d in dims if isinstance(d, str)] for name, dims in inputs.items()}
    dynamic = {name: dims for name, dims in named.items() if dims}
    config = json.loads(meta) if meta else None  # files from before configs were stored have none
    return {"inputs": inputs, "outputs": outputs, "dynamic": dynamic, "config": config, **info}


def _runner(path: Path, fmt: str, device: torch.device) -> Tuple[Callable[[Tensor, Tensor], Tensor], bool]:
    """A callable (image, lam) → output (on the CPU) for the file, and whether it takes λ."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        takes_lam = LAM in {i.name for i in session.get_inputs()}

        def run(x: Tensor, lam: Tensor) -> Tensor:
            feed = {IMAGE: x.detach().cpu().numpy(), **({LAM: lam.detach().cpu().numpy()} if takes_lam else {})}
            return torch.from_numpy(session.run([OUTPUT], feed)[0])

        return run, takes_lam
    ep = torch.export.load(str(path))
    module, takes_lam = ep.module(), LAM in ep.graph_signature.user_inputs

    def run_pt2(x: Tensor, lam: Tensor) -> Tensor:
        return module(x.to(device), *([lam.to(device)] if takes_lam else [])).cpu()

    return run_pt2, takes_lam


@torch.no_grad()
def check_export(tm: TunableModel, path: Union[str, Path], format: str, lams: Sequence[LamLike],
                 size: Sequence[int] = (2, 3, 48, 40), atol: float = 1e-4) -> Dict[str, float]:
    """Run the exported file on a random image of ``size`` (B, C, H, W) at each λ (p,) and
    compare with eager ``tm(x, lam=λ)``. A baked file ignores λ: pass the λ it was baked at.

    Returns ``{"λ_1,λ_2,...": max abs error}``; raises :class:`ExportMismatch` listing every λ
    whose error exceeds ``atol`` (or is NaN).
    """
    fmt, ref = _format(format), tm.reference_tensor()
    run, takes_lam = _runner(Path(path), fmt, ref.device)
    x = torch.rand(tuple(size), generator=torch.Generator().manual_seed(0)).to(ref.dtype)
    errors: Dict[str, float] = {}
    with _eval(tm):
        for lam in lams:
            lam_t = tm.validate_lam(lam)
            if lam_t.dim() != 1:
                raise ValueError(f"check_export takes one λ of shape ({tm.p},) at a time; got {tuple(lam_t.shape)}")
            expected = tm(x.to(ref.device), lam=lam_t).float().cpu()
            try:
                got = run(x, lam_t).float()
            except Exception as exc:  # e.g. a shape guard of the .pt2: name the size that broke it
                raise ExportMismatch(f"{path} ({fmt}) failed to run at size {tuple(size)}: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:300]}") from exc
            if got.shape != expected.shape:
                raise ExportMismatch(f"{path}: output shape {tuple(got.shape)} != eager {tuple(expected.shape)} "
                                     f"at size {tuple(size)}")
            errors[",".join(f"{v:g}" for v in lam_t.tolist())] = (got - expected).abs().max().item()
    bad = {k: v for k, v in errors.items() if not v <= atol}  # `not <=` also catches NaN
    if bad:
        listed = ", ".join(f"λ=({k}): {v:.3g}" for k, v in bad.items())
        raise ExportMismatch(f"{path} ({fmt}{'' if takes_lam else ', baked'}) differs from the eager model by more "
                             f"than atol={atol:g} at size {tuple(size)}: {listed}")
    return errors


def export_command(model_source: Union[str, Path], fmt: str, out: Union[str, Path],
                   lam: Optional[LamLike] = None) -> Dict[str, Any]:
    """``tunify export``: resolve the model, export, and check the file at
    every corner of the λ space and its centre (or at the baked λ). Returns a summary dict.
    ``model_source``: any name :func:`tunify.publishing.resolve` takes."""
    from .publishing import resolve

    _format(fmt)
    tm = resolve(model_source).tm
    path = export_model(tm, out, format=fmt, lam=lam)
    space = tm.lam_space
    centre = [1.0 / space.p if space.kind == "simplex" else 0.5] * space.p
    lams: List[Any] = [lam] if lam is not None else [*lam_grid(space, 2), centre]
    errors = check_export(tm, path, fmt, lams)
    described = describe_export(path, fmt)
    files = [path, *path.parent.glob(path.name + ".data")]  # ONNX weights past 2 GB live beside it
    return {
        "path": str(path), "format": fmt, "objectives": list(tm.objectives), "lam_space": space.kind,
        "baked_at": None if lam is None else tm.validate_lam(lam).tolist(),
        "inputs": described["inputs"], "outputs": described["outputs"], "dynamic_axes": described["dynamic"],
        "max_abs_error": errors, "file_size": sum(f.stat().st_size for f in files),
    }
