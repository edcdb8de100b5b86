"""Export: ONNX and torch.export files with λ as a live input match the eager model at
several λ, at batch and image sizes other than the example's; baked files equal tm at their
λ only; the box space's ω = (1, λ) is computed in the graph; failures are clear."""
import pytest
import torch
from conftest import perturb
from torch import nn

from tunify import tunify
from tunify.archs import create_model
from tunify.export import ExportMismatch, check_export, describe_export, export_command, export_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

KW = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}
LAMS = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.5, 0.5]]
SIZE = (3, 3, 37, 45)  # batch, height and width all differ from the example (1, 3, 64, 64)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny tensors: a second thread only adds contention (stalls of ~1 s per call when the
    # machine is busy), never speed.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tm(space="simplex", mode="auto", seed=0):
    torch.manual_seed(seed)
    tm = tunify(create_model("nafnet", **KW), ["fidelity", "grain"], lam_space=space, mode=mode)
    perturb(tm, seed=seed)
    return tm.eval()


@pytest.fixture(scope="module")
def tm():
    return _tm()


def _lam_matters(tm, lams, size=SIZE, at_least=1e-2):
    """Guard against a vacuous check: the eager outputs at these λ must differ."""
    x = torch.rand(size)
    with torch.no_grad():
        outs = [tm(x, lam=lam) for lam in lams]
    assert min((a - b).abs().max().item() for i, a in enumerate(outs) for b in outs[i + 1:]) > at_least


def test_onnx_with_lam_input_matches_at_other_sizes(tm, tmp_path):
    path = export_model(tm, tmp_path / "m.onnx", "onnx")
    assert not tm.training  # exporting switches to eval mode and back, to the model's own mode
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image", "lam"] and [o.name for o in model.graph.output] == ["output"]
    info = describe_export(path, "onnx")
    assert info["inputs"] == {"image": ["batch", 3, "height", "width"], "lam": [2]}
    assert info["dynamic"] == {"image": ["batch", "height", "width"]}
    # the model's config travels in the file: what λ means is readable without tunify
    assert [o["name"] for o in info["config"]["objectives"]] == ["fidelity", "grain"]
    assert info["config"]["lam_space"] == "simplex" and info["config"]["baked_at"] is None
    _lam_matters(tm, LAMS)
    errors = check_export(tm, path, "onnx", LAMS, size=SIZE)
    assert len(errors) == 4 and max(errors.values()) < 1e-4
    assert max(check_export(tm, path, "onnx", LAMS[:3], size=(1, 3, 20, 64)).values()) < 1e-4


def test_torch_export_with_lam_input_matches_at_other_sizes(tm, tmp_path):
    path = export_model(tm, tmp_path / "m.pt2", "torch-export")
    assert describe_export(path, "torch-export")["inputs"] == {"image": ["batch", 3, "height", "width"], "lam": [2]}
    errors = check_export(tm, path, "torch-export", LAMS, size=SIZE)  # runs torch.export.load(path).module()
    assert len(errors) == 4 and max(errors.values()) < 1e-4


def test_baked_export_equals_tm_at_its_lam_only(tm, tmp_path):
    lam = [0.3, 0.7]
    path = export_model(tm, tmp_path / "baked.pt2", "torch-export", lam=lam)
    config = describe_export(path, "torch-export")["config"]
    assert config["objectives"][1]["name"] == "grain" and config["baked_at"] == pytest.approx(lam)
    # One run at both λ (loading a .pt2 is the slow part): only the other λ may be reported.
    with pytest.raises(ExportMismatch, match=r"baked.*λ=\(1,0\)") as info:
        check_export(tm, path, "torch-export", [lam, [1.0, 0.0]], size=SIZE)
    assert "0.3,0.7" not in str(info.value)


def test_box_space_computes_its_coefficients_in_the_graph(tmp_path):
    tm = _tm("box", seed=1)
    lams = [[0.0, 0.0], [1.0, 1.0], [0.3, 0.8]]
    _lam_matters(tm, lams, size=(2, 3, 33, 47))
    path = export_model(tm, tmp_path / "box.onnx", "onnx")
    errors = check_export(tm, path, "onnx", lams, size=(2, 3, 33, 47))
    assert set(errors) == {"0,0", "1,1", "0.3,0.8"} and max(errors.values()) < 1e-4


def test_module_path_exports_through_the_scope(tmp_path):
    tm = _tm(mode="module", seed=2)
    assert tm.tunify_report.path == "module" and tm._graph is None
    path = export_model(tm, tmp_path / "mod.pt2", "torch-export")
    assert max(check_export(tm, path, "torch-export", LAMS[:3], size=SIZE).values()) < 1e-4


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y if bool(y.mean() > 0) else -y  # a branch on values: torch.export cannot trace it


def test_untraceable_model_fails_clearly(tmp_path):
    tm = tunify(_DataDependent(), 2, mode="module")
    with pytest.warns(UserWarning, match="dynamic shapes failed"), pytest.raises(RuntimeError, match=r"lam=") as info:
        export_model(tm, tmp_path / "x.onnx", "onnx")
    assert "'module'-path" in str(info.value) and not (tmp_path / "x.onnx").exists()


class _FixedSize(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 3, 16, 16))  # a position table: only 16 x 16 images fit

    def forward(self, x):
        return self.conv(x) + self.pos


def test_axes_the_model_fixes_become_static_with_a_warning(tmp_path):
    tm = tunify(_FixedSize(), 2).eval()
    perturb(tm)
    with pytest.warns(UserWarning, match=r"fixes the image axes \['height', 'width'\]"):
        path = export_model(tm, tmp_path / "fixed.pt2", "torch-export", example_size=(1, 3, 16, 16))
    info = describe_export(path, "torch-export")
    assert info["inputs"]["image"] == ["batch", 3, 16, 16] and info["dynamic"] == {"image": ["batch"]}
    assert max(check_export(tm, path, "torch-export", LAMS[:2], size=(3, 3, 16, 16)).values()) < 1e-4


def test_wrong_format_is_named(tm, tmp_path):
    with pytest.raises(ValueError, match=r"'tflite'.*onnx, torch-export"):
        export_model(tm, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="unknown export format"):
        check_export(tm, tmp_path / "m.tflite", "pt2", LAMS)
    assert not any(tmp_path.iterdir())


def test_export_command_checks_corners_and_centre(tm, tmp_path):
    folder = tm.save_pretrained(tmp_path / "published", arch="nafnet", arch_kwargs=KW)
    summary = export_command(folder, "torch-export", tmp_path / "out" / "m.pt2")
    assert set(summary["max_abs_error"]) == {"1,0", "0,1", "0.5,0.5"}
    assert max(summary["max_abs_error"].values()) < 1e-4
    assert summary["dynamic_axes"] == {"image": ["batch", "height", "width"]} and summary["baked_at"] is None
    assert summary["file_size"] == (tmp_path / "out" / "m.pt2").stat().st_size > 0
