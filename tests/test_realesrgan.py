"""Real-ESRGAN's official weights: the ncnn reader against ncnn's own forward, the .pth
release layout through the URL path, and the "original" target (the frozen network's output)."""
import struct

import ncnn
import numpy as np
import pytest
import torch
from skimage import data as skdata

from tunify.archs import create_model
from tunify.archs.ncnn import FP16_TAG, read_ncnn, read_ncnn_param
from tunify.archs.realesrgan import NCNN_WEIGHTS, OFFICIAL_URLS, ncnn_files, pretrained_realesrgan
from tunify.archs.weights import load_pretrained
from tunify.objectives import ObjectiveSet, ParametricLoss


def photo_crop(size: int) -> torch.Tensor:
    img = skdata.astronaut()[60 : 60 + size, 180 : 180 + size].astype(np.float32) / 255
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def ncnn_forward(stem: str, x: torch.Tensor) -> torch.Tensor:
    """ncnn's own CPU forward in fp32 (vulkan and every fp16/bf16 path off)."""
    param, bin_path = ncnn_files(stem)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for opt in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, opt, False)
    assert net.load_param(str(param)) == 0 and net.load_model(str(bin_path)) == 0
    last = read_ncnn_param(param)[-1]
    arr = np.ascontiguousarray(x[0].numpy())  # ncnn.Mat borrows this memory: keep it alive
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(arr))
    ret, out = ex.extract(last.tops[0])
    assert ret == 0
    return torch.from_numpy(np.array(out)).clone()[None]


@pytest.mark.parametrize("name,size", [("realesr-compact-x4", 32), ("realesrgan-x4plus", 24)])
def test_ncnn_weights_equal_ncnn_forward(name, size):
    model = pretrained_realesrgan(name).eval()
    x = photo_crop(size)
    with torch.no_grad():
        ours = model(x)
    theirs = ncnn_forward(NCNN_WEIGHTS[name], x)
    assert ours.shape == theirs.shape == (1, 3, 4 * size, 4 * size)
    assert (ours - theirs).abs().max() < 2e-5
    # a real SR result, not a copy of the input: close to bicubic but clearly not it
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert 0.003 < (ours - bicubic).abs().mean() < 0.1


def test_official_pth_layout_through_the_url_path(tmp_path):
    """The release .pth holds params_ema (BasicSR); the URL path reads a file:// copy."""
    ref = pretrained_realesrgan("realesr-compact-x4")
    path = tmp_path / "realesr-animevideov3.pth"
    torch.save({"params_ema": ref.state_dict(), "params": {}}, path)
    model = pretrained_realesrgan("realesr-compact-x4", source=path.as_uri())
    for (k, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert OFFICIAL_URLS["realesrgan-x4plus"].endswith("RealESRGAN_x4plus.pth")


def test_wrong_architecture_for_ncnn_weights_is_refused():
    with pytest.raises(ValueError, match="convolution/PReLU layers"):
        load_pretrained(create_model("realesrgan-x4plus-anime"), "ncnn:realesrgan-x4plus")
    with pytest.raises(FileNotFoundError, match="Did you mean"):
        load_pretrained(create_model("realesr-compact-x4"), "ncnn:realesr-animevideov3-x5")


def _tiny_ncnn(tmp_path, tag: int, extra: bytes = b""):
    param = tmp_path / "m.param"
    param.write_text("7767517\n3 3\nInput in 0 1 data\nConvolution c0 1 1 data a 0=1 1=1 5=1 6=3\n"
                     "PReLU p0 1 1 a out 0=2\n")
    w = np.arange(3, dtype=np.float32) / 7  # 3 fp16 values: 6 bytes, padded to 8
    body = struct.pack("<I", tag) + (w.astype("<f2").tobytes() + b"\0\0" if tag == FP16_TAG else w.tobytes())
    (tmp_path / "m.bin").write_bytes(body + np.array([0.5], np.float32).tobytes()
                                     + np.array([0.1, 0.2], np.float32).tobytes() + extra)
    return param, tmp_path / "m.bin", w


@pytest.mark.parametrize("tag", [0, FP16_TAG])
def test_reader_fp32_and_fp16_blobs(tmp_path, tag):
    param, bin_path, w = _tiny_ncnn(tmp_path, tag)
    conv, prelu = [l for l in read_ncnn(param, bin_path) if l.type != "Input"]
    assert conv.weight.shape == (1, 3, 1, 1)
    assert torch.allclose(conv.weight.flatten(), torch.from_numpy(w), atol=1e-3)
    assert conv.bias.tolist() == [0.5] and torch.allclose(prelu.slope, torch.tensor([0.1, 0.2]))


def test_reader_refuses_bad_files(tmp_path):
    param, bin_path, _ = _tiny_ncnn(tmp_path, 0, extra=b"\0" * 8)
    with pytest.raises(ValueError, match="bytes left"):
        read_ncnn(param, bin_path)
    param, bin_path, _ = _tiny_ncnn(tmp_path, 0x000D4B38)
    with pytest.raises(ValueError, match="quantised"):
        read_ncnn(param, bin_path)
    bad = tmp_path / "bad.param"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="magic"):
        read_ncnn_param(bad)


def test_original_target_is_the_frozen_network_output():
    torch.manual_seed(0)
    net = create_model("srvgg-compact", num_feat=8, num_conv=2, upscale=2)
    objectives = ObjectiveSet.from_specs([
        {"name": "look", "target": "original", "losses": [{"type": "MSELoss"}]},
        {"name": "fidelity", "target": "clean", "losses": [{"type": "MSELoss"}]},
    ])
    ploss = ParametricLoss(objectives)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="set_reference"):
        ploss(torch.rand(2, 3, 16, 16), {"lq": lq, "gt": gt}, torch.tensor([1.0, 0.0]))
    ploss.set_reference(net)
    with torch.no_grad():
        want = net(lq)
        net.body[0].weight.add_(1.0)  # training the original afterwards must not move the target
    batch = {"lq": lq, "gt": gt}
    pred = want.clone().requires_grad_(True)
    loss, terms = ploss(pred, batch, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(batch["original"], want) and not batch["original"].requires_grad
    assert terms["look"].abs().max() == 0 and terms["fidelity"].min() > 0
    loss.backward()
    assert pred.grad is not None and ploss.reference.net.body[0].weight.grad is None


def test_compact_recipe_starts_exactly_at_the_original():
    """realesr_compact_pd: the recipe names the official weights in one line; at init the
    tunable model's output is the original's at every λ, so the 'look' loss is exactly zero."""
    from pathlib import Path

    from tunify.data import build_dataset
    from tunify.objectives import ParametricLoss
    from tunify.training import build_model, load_recipe, tunify_from_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "realesr_compact_pd.yaml",
                         overrides=["data.train.patch_size=64"])
    assert recipe.model.weights == "ncnn:realesr-animevideov3-x4"
    original = build_model(recipe.model)
    tm = tunify_from_recipe(original, recipe)
    ploss = ParametricLoss.from_recipe(recipe, reference=original)
    batch = build_dataset(recipe.data.train).batch(3, torch.Generator().manual_seed(1))
    lam = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    with torch.no_grad():
        _, terms = ploss(tm(batch["lq"], lam=lam), batch, lam)
    assert terms["look"].abs().max() < 1e-10 and terms["fidelity"].min() > 1e-4
