"""tunify.data: degradations, image I/O and stateless datasets, checked against references."""
import socket

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from tunify.data import (
    DEGRADATIONS,
    DegradedImages,
    PairedFolders,
    batch_generator,
    bicubic_down,
    build_dataset,
    build_degradation,
    filter2d,
    gaussian_blur,
    gaussian_kernel,
    gaussian_noise,
    jpeg,
    load_images,
    motion_blur,
    motion_kernel,
    save_image,
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Everything here must work offline: any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tunify.data tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _smooth(b=2, h=48, w=48, seed=0):
    """Random images with structure at several scales, in [0, 1]."""
    g = _gen(seed)
    x = torch.rand(b, 3, h // 4, w // 4, generator=g)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return (0.7 * x + 0.3 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


def _write(path, chw_uint8):
    """Save a uint8 (C, H, W) tensor; Pillow picks the format from the suffix."""
    Image.fromarray(chw_uint8.permute(1, 2, 0).numpy()).save(path)


# --- batch_generator and determinism ---------------------------------------------------------

def test_batch_generator_depends_only_on_seed_step_rank():
    assert batch_generator(3, 10, 1).initial_seed() == batch_generator(3, 10, 1).initial_seed()
    seeds = {batch_generator(s, t, r).initial_seed() for s in (0, 1) for t in (0, 1, 2) for r in (0, 1)}
    assert len(seeds) == 12
    assert all(0 <= s < 2**63 for s in seeds)
    # pinned: a resumed run on another machine or Python must get this exact stream
    assert batch_generator(0, 0, 0).initial_seed() == 612119685570776958
    with pytest.raises(ValueError, match="step must be an integer"):
        batch_generator(0, 1.5)


NOISY_SR = [
    {"type": "gaussian_blur", "sigma": [0.2, 2.0]},
    {"type": "motion_blur", "length": [1, 7], "angle": [0, 180]},
    {"type": "bicubic_down", "scale": 2},
    {"type": "gaussian_noise", "sigma": [5, 30]},
    {"type": "jpeg", "quality": [40, 95]},
]


def test_degraded_batches_are_reproducible_and_leave_the_global_rng_alone():
    ds = DegradedImages(list(_smooth(3, 64, 80)), 32, NOISY_SR)
    rng = torch.get_rng_state()
    a = ds.batch(6, batch_generator(7, 100))
    b = ds.batch(6, batch_generator(7, 100))
    c = ds.batch(6, batch_generator(7, 101))
    assert torch.equal(torch.get_rng_state(), rng)
    assert a["gt"].shape == (6, 3, 32, 32) and a["lq"].shape == (6, 3, 16, 16)
    assert a["gt"].dtype == a["lq"].dtype == torch.float32
    assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["lq"], b["lq"])
    assert not torch.equal(a["gt"], c["gt"])


def test_fixed_batch_is_the_same_every_call_and_follows_seed_and_patch_size():
    ims = list(_smooth(3, 64, 80))
    ds = DegradedImages(ims, 32, NOISY_SR)
    a, b = ds.fixed_batch(5), ds.fixed_batch(5)
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    # centre crop of image i % 3: 64×80 → rows 16:48, cols 24:56
    assert torch.equal(a["gt"][1], ims[1][:, 16:48, 24:56]) and torch.equal(a["gt"][4], a["gt"][1])
    assert not torch.equal(a["lq"][4], a["lq"][1])          # a repeat gets its own degradation
    assert not torch.equal(ds.fixed_batch(5, seed=1)["lq"], a["lq"])
    assert ds.fixed_batch(2, patch_size=48)["gt"].shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match="not divisible by the scale 2"):
        ds.fixed_batch(2, patch_size=33)


def test_crops_come_from_the_images_and_augmentation_reaches_all_8_symmetries():
    h, w = 40, 50
    yy, xx = torch.meshgrid(torch.arange(h) / 64.0, torch.arange(w) / 64.0, indexing="ij")
    coords = torch.stack([yy, xx, torch.zeros(h, w)])    # pixel (y, x) holds (y/64, x/64, 0)
    plain = DegradedImages([coords], 8, [], augment=False).batch(32, _gen(0))["gt"]
    for patch in plain:
        y0, x0 = round(patch[0, 0, 0].item() * 64), round(patch[1, 0, 0].item() * 64)
        assert 0 <= y0 <= h - 8 and 0 <= x0 <= w - 8
        assert torch.equal(patch, coords[:, y0 : y0 + 8, x0 : x0 + 8])
    seen = set()
    for patch in DegradedImages([coords], 8, [], augment=True).batch(64, _gen(1))["gt"]:
        # the sign pattern of the y/x ramps along rows and columns identifies the symmetry
        steps = (patch[0, 1, 0] - patch[0, 0, 0], patch[0, 0, 1] - patch[0, 0, 0],
                 patch[1, 1, 0] - patch[1, 0, 0], patch[1, 0, 1] - patch[1, 0, 0])
        seen.add(tuple(int(torch.sign(s).item()) for s in steps))
    assert len(seen) == 8


def test_small_images_are_left_out_and_none_large_enough_is_an_error():
    big, small = _smooth(1, 40, 40)[0], _smooth(1, 20, 40)[0]
    with pytest.warns(UserWarning, match="1 of 2 images are smaller than 32×32"):
        ds = DegradedImages([small, big], 32, [])
    assert len(ds) == 1
    with pytest.raises(ValueError, match="none of the 1 images is at least 32×32"):
        DegradedImages([small], 32, [])


# --- noise -----------------------------------------------------------------------------------

def test_gaussian_noise_has_the_requested_std():
    gt = torch.full((4, 3, 64, 64), 0.5)
    lq = gaussian_noise(gt, 25, _gen(0))
    assert abs((lq - gt).std().item() / (25 / 255) - 1) < 0.03
    assert abs((lq - gt).mean().item()) < 0.003
    assert lq.min() < 0.5 - 3 * 25 / 255                     # not clipped by default


def test_per_image_noise_sigma_is_drawn_from_the_range():
    gt = torch.full((16, 3, 48, 48), 0.5)
    lq = gaussian_noise(gt, [5, 30], _gen(1))
    stds = (lq - gt).flatten(1).std(dim=1) * 255
    assert (stds > 5 * 0.95).all() and (stds < 30 * 1.05).all()
    assert stds.max() - stds.min() > 10                      # per image, not one σ for all
    clipped = gaussian_noise(torch.zeros(2, 3, 16, 16), 50, _gen(1), clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1


# --- blur ------------------------------------------------------------------------------------

def test_blur_kernels_sum_to_one_and_keep_constant_images_constant():
    sig = torch.tensor([0.0, 0.5, 1.3, 4.0])
    kernels = [gaussian_kernel(sig, 21), motion_kernel(torch.tensor([0.0, 3.0, 7.5, 21.0]),
                                                       torch.tensor([0.0, 30.0, 90.0, 135.0]), 21)]
    for k in kernels:
        assert k.shape == (4, 21, 21) and (k >= 0).all()
        torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(4), rtol=0, atol=1e-6)
    const = torch.full((2, 3, 32, 32), 0.37)
    torch.testing.assert_close(gaussian_blur(const, [0.5, 3.0], _gen()), const, rtol=0, atol=1e-6)
    torch.testing.assert_close(motion_blur(const, [3, 15], [0, 180], _gen()), const, rtol=0, atol=1e-6)


def test_blur_with_zero_sigma_or_length_is_the_identity():
    x = _smooth(2, 32, 32)
    torch.testing.assert_close(gaussian_blur(x, 0, _gen()), x, rtol=0, atol=1e-7)
    torch.testing.assert_close(gaussian_blur(x, 1e-4, _gen()), x, rtol=0, atol=1e-7)
    torch.testing.assert_close(motion_blur(x, 0, 45, _gen()), x, rtol=0, atol=1e-7)


def test_per_image_gaussian_blur_matches_scipy_in_the_interior():
    x = torch.rand(2, 3, 48, 48, generator=_gen(3), dtype=torch.float64).float()
    sigmas = [0.8, 2.0]
    y = filter2d(x, gaussian_kernel(torch.tensor(sigmas), 21))
    for i, s in enumerate(sigmas):
        for c in range(3):
            # truncate so scipy keeps radius 10, our 21-tap kernel
            ref = scipy.ndimage.gaussian_filter(x[i, c].double().numpy(), s, mode="reflect", truncate=10.25 / s)
            np.testing.assert_allclose(y[i, c, 10:-10, 10:-10].numpy(), ref[10:-10, 10:-10], atol=2e-6)
    # and the sampled σ of a range lands in one image each: the two blurs differ
    z = gaussian_blur(x, [0.5, 3.0], _gen(0))
    assert not torch.allclose(z[0] - x[0], z[1] - x[1])


def test_motion_blur_follows_its_angle():
    rows = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(1, 3, 32, 32).contiguous()  # constant along x
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 1.0                                                                 # a vertical edge
    k0 = motion_kernel(torch.tensor([5.0]), torch.tensor([0.0]), 21)[0]
    assert torch.count_nonzero(k0) == 5 and torch.count_nonzero(k0[10]) == 5   # 5 taps on the centre row
    horizontal = lambda x: motion_blur(x, 9, 0, _gen())  # noqa: E731
    vertical = lambda x: motion_blur(x, 9, 90, _gen())   # noqa: E731
    torch.testing.assert_close(horizontal(rows), rows, rtol=0, atol=1e-6)
    assert (horizontal(edge) - edge).abs().max() > 0.3
    torch.testing.assert_close(vertical(edge), edge, rtol=0, atol=1e-6)
    assert (vertical(rows) - rows).abs()[..., 4:-4, :].max() < 1e-5      # a ramp survives away from borders
    diag = motion_kernel(torch.tensor([9.0]), torch.tensor([45.0]), 21)[0]
    assert diag[7, 13] > 0 and diag[13, 7] > 0 and diag[7, 7] == 0 and diag[13, 13] == 0  # up-right on screen


# --- resize and JPEG -------------------------------------------------------------------------

def test_bicubic_down_crops_to_the_scale_and_matches_interpolate():
    x = _smooth(2, 50, 43)
    y = bicubic_down(x, 4)
    assert y.shape == (2, 3, 12, 10)
    ref = F.interpolate(x[..., :48, :40], size=(12, 10), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(y, ref.clamp(0, 1), rtol=0, atol=0)
    assert bicubic_down(x, 1) is x
    deg = build_degradation([{"type": "bicubic_down", "scale": 2}, {"type": "bicubic_down", "scale": 3}])
    assert deg.scale == 6 and deg(x, None).shape == (2, 3, 8, 7)


def test_jpeg_quality_orders_the_error_and_quantises_to_8_bits():
    x = load_images("skimage:astronaut")[0][None, :, 100:164, 200:264]
    err = {q: (jpeg(x, q, _gen()) - x).abs().mean().item() for q in (10, 95)}
    assert err[95] < err[10] / 2, err
    y = jpeg(x, [10, 95], _gen(5))
    torch.testing.assert_close(y * 255, (y * 255).round(), rtol=0, atol=1e-4)
    assert torch.equal(y, jpeg(x, [10, 95], _gen(5)))


# --- specs and their errors ------------------------------------------------------------------

def test_degradation_spec_scale_repr_and_single_image_call():
    deg = build_degradation(NOISY_SR)
    assert deg.scale == 2 and len(deg) == 5
    assert repr(deg).startswith("Degradation(gaussian_blur(sigma=[0.2, 2.0]) -> motion_blur(")
    assert "bicubic_down(scale=2)" in repr(deg)
    assert build_degradation(deg.spec).spec == deg.spec
    assert deg(_smooth(1, 32, 32)[0], _gen()).shape == (3, 16, 16)
    assert build_degradation({"type": "gaussian_noise", "sigma": 5}).scale == 1
    assert set(DEGRADATIONS) == {"gaussian_noise", "gaussian_blur", "motion_blur", "bicubic_down", "jpeg"}
    with pytest.raises(ValueError, match="pass generator="):
        deg(_smooth(1, 32, 32), None)
    x = _smooth(1, 8, 8)
    same = build_degradation([])(x, None)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()   # lq never aliases gt


@pytest.mark.parametrize("spec, message", [
    ({"type": "gausian_noise", "sigma": 5}, r"unknown degradation type 'gausian_noise'\. Did you mean 'gaussian_noise'"
                                            r".*Valid types: gaussian_noise, gaussian_blur, motion_blur"),
    ({"type": "gaussian_noise", "sgima": 5}, r"gaussian_noise has no parameter 'sgima'\. Did you mean 'sigma'\?"),
    ({"type": "motion_blur", "length": 5, "angel": 3}, r"Did you mean 'angle'\?"),
    ({"sigma": 5}, r"missing 'type'; valid types: gaussian_noise"),
    ({"type": "gaussian_noise", "sigma": [30, 5]}, r"sigma=\[30, 5\] is \[high, low\]; write the range as \[5, 30\]"),
    ({"type": "gaussian_noise", "sigma": -3}, r"sigma=-3 is below 0"),
    ({"type": "gaussian_blur", "sigma": [-1, 2]}, r"below 0"),
    ({"type": "gaussian_noise"}, r"gaussian_noise needs 'sigma'"),
    ({"type": "gaussian_noise", "sigma": "25"}, r"a number or a \[low, high\] range"),
    ({"type": "jpeg", "quality": [50, 101]}, r"above 100"),
    ({"type": "motion_blur", "length": 30, "angle": 0}, r"raise kernel_size"),
    ({"type": "gaussian_blur", "sigma": 1, "kernel_size": 20}, r"positive odd integer"),
    ({"type": "bicubic_down", "scale": [2, 4]}, r"whole number ≥ 1"),
])
def test_bad_degradation_specs_say_what_to_fix(spec, message):
    with pytest.raises(ValueError, match=message):
        build_degradation([{"type": "gaussian_noise", "sigma": 1}, spec])
    with pytest.raises(ValueError, match=r"degradation\[1\]"):
        build_degradation([{"type": "gaussian_noise", "sigma": 1}, spec])


def test_the_functions_check_their_arguments_too():
    with pytest.raises(ValueError, match=r"\[high, low\]"):
        gaussian_noise(torch.zeros(1, 3, 8, 8), [9, 1], _gen())
    with pytest.raises(ValueError, match=r"add a batch axis"):
        gaussian_blur(torch.zeros(3, 8, 8), 1, _gen())
    with pytest.raises(ValueError, match=r"too small for a 21×21 kernel"):
        gaussian_blur(torch.zeros(1, 3, 8, 8), 1, _gen())


def test_bad_dataset_specs_say_what_to_fix():
    with pytest.raises(ValueError, match=r"unknown type 'degradd'\. Did you mean 'degraded'\?"):
        build_dataset({"type": "degradd"})
    with pytest.raises(ValueError, match=r"unknown key 'patchsize'\. Did you mean 'patch_size'"):
        build_dataset({"type": "degraded", "images": "skimage", "patchsize": 64, "degradation": []})
    with pytest.raises(ValueError, match=r"missing 'degradation'"):
        build_dataset({"type": "degraded", "images": "skimage", "patch_size": 64})
    with pytest.raises(ValueError, match=r"patch_size=30 is not divisible by the scale 4; use 28 or 32"):
        DegradedImages(list(_smooth(1, 64, 64)), 30, {"type": "bicubic_down", "scale": 4})
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer"):
        DegradedImages(list(_smooth(1, 64, 64)), 32, []).batch(0, _gen())


# --- images ----------------------------------------------------------------------------------

def test_skimage_images_load_offline_as_rgb_floats():
    astro, camera = load_images("skimage:astronaut, camera")
    assert astro.shape == camera.shape == (3, 512, 512) and astro.dtype == torch.float32
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[0], camera[2])
    assert 0 <= astro.min() and astro.max() <= 1 and astro.std() > 0.1
    default = load_images("skimage", max_size=64)
    assert len(default) == 8
    assert all(im.shape[0] == 3 and max(im.shape[1:]) == 64 for im in default)
    assert not torch.equal(default[0][0], default[0][1])     # colour photos, not gray copies
    with pytest.raises(ValueError, match=r"unknown scikit-image image 'astronot'\. Did you mean 'astronaut'\?"):
        load_images("skimage:astronot")


def test_folder_loading_sorts_by_name_and_reports_problems(tmp_path):
    g = _gen(2)
    pics = [torch.randint(0, 256, (3, 20 + i, 30), generator=g, dtype=torch.uint8) for i in range(3)]
    for name, pic in zip(["b.png", "a.PNG", "c.bmp"], pics):
        _write(tmp_path / name, pic)
    Image.fromarray(np.full((10, 12), 200, np.uint8)).save(tmp_path / "d_gray.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(tmp_path)
    assert [im.shape[1] for im in images] == [21, 20, 22, 10]                 # a, b, c, d
    assert torch.equal(images[0], pics[1].float() / 255)
    assert torch.allclose(images[3], torch.full((3, 10, 12), 200 / 255))
    assert load_images([tmp_path / "b.png"], max_size=15)[0].shape == (3, 10, 15)
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        load_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        load_images(tmp_path / "empty")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"could not read image .*broken\.png"):
        load_images(tmp_path)


def test_save_and_load_round_trip_within_one_level(tmp_path):
    x = torch.rand(3, 17, 23, generator=_gen(6))
    save_image(x, tmp_path / "deep" / "er" / "x.png")
    (back,) = load_images([tmp_path / "deep" / "er" / "x.png"])
    assert back.shape == x.shape and (back - x).abs().max() <= 0.5 / 255 + 1e-6
    save_image(torch.full((1, 8, 8), 2.0), tmp_path / "clamped.jpg")         # out of range: clamped
    assert load_images(str(tmp_path / "clamped.jpg"))[0].min() > 0.98
    with pytest.raises(ValueError, match=r"looks like \(H, W, C\)"):
        save_image(torch.rand(8, 9, 3), tmp_path / "hwc.png")


# --- paired folders --------------------------------------------------------------------------

def _paired_tmp(tmp_path, scale, lq_suffix=""):
    g = _gen(8)
    (tmp_path / "gt").mkdir()
    (tmp_path / "lq").mkdir()
    for i, (h, w) in enumerate([(48, 64), (72, 56), (60, 60)]):
        gt = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        lq = bicubic_down(gt[None].float() / 255, scale)[0]
        _write(tmp_path / "gt" / f"im{i}.png", gt)
        save_image(lq, tmp_path / "lq" / f"im{i}{lq_suffix}.png")
    return tmp_path / "lq", tmp_path / "gt"


def test_paired_crops_stay_aligned_under_augmentation(tmp_path):
    s, p = 2, 24
    ds = PairedFolders(*_paired_tmp(tmp_path, s, lq_suffix="x2"), patch_size=p, scale=s)
    assert len(ds) == 3
    m = 3  # lq pixels at the crop border see gt pixels outside the crop
    for step in range(4):
        batch = ds.batch(8, batch_generator(0, step))
        assert batch["lq"].shape == (8, 3, 12, 12) and batch["gt"].shape == (8, 3, 24, 24)
        redone = bicubic_down(batch["gt"], s)[..., m:-m, m:-m]
        # the lq files hold bicubic_down(gt) rounded to 8 bits
        assert (redone - batch["lq"][..., m:-m, m:-m]).abs().max() <= 0.5 / 255 + 1e-5
        off_by_one = batch["lq"][..., m + 1 : -m + 1, m:-m]
        assert (redone - off_by_one).abs().max() > 0.1                      # the check can fail
    fixed = ds.fixed_batch(3)
    assert torch.equal(fixed["gt"], ds.fixed_batch(3)["gt"]) and fixed["lq"].shape == (3, 3, 12, 12)
    gt0 = load_images([tmp_path / "gt" / "im0.png"])[0]
    assert torch.equal(fixed["gt"][0], gt0[:, 12:36, 20:44])                # centre crop, 48×64
    with pytest.raises(ValueError, match="3 usable pairs"):
        ds.fixed_batch(4)
    lazy = PairedFolders(tmp_path / "lq", tmp_path / "gt", patch_size=p, scale=s, in_memory=False)
    assert all(torch.equal(u, v) for u, v in zip(lazy.batch(4, _gen(1)).values(), ds.batch(4, _gen(1)).values()))


def test_paired_folders_name_unmatched_and_mis_sized_files(tmp_path):
    lq_dir, gt_dir = _paired_tmp(tmp_path, 2)
    (lq_dir / "im1.png").rename(lq_dir / "other.png")
    with pytest.raises(ValueError, match=r"(?s)in lq .* only: other\.png.*in gt .* only: im1\.png"):
        PairedFolders(lq_dir, gt_dir, 16, scale=2)
    (lq_dir / "other.png").rename(lq_dir / "im1.png")
    with pytest.raises(ValueError, match=r"im0\.png is 48×64 but its lq im0\.png is 24×32; with scale=3"):
        PairedFolders(lq_dir, gt_dir, 12, scale=3)


def test_build_dataset_makes_both_kinds(tmp_path):
    deg = build_dataset({"type": "degraded", "images": "skimage:coffee,chelsea", "patch_size": 32, "max_size": 96,
                         "degradation": [{"type": "bicubic_down", "scale": 4}, {"type": "gaussian_noise", "sigma": 10}]})
    assert isinstance(deg, DegradedImages) and deg.batch(3, _gen())["lq"].shape == (3, 3, 8, 8)
    lq_dir, gt_dir = _paired_tmp(tmp_path, 4)
    paired = build_dataset({"type": "paired", "lq": str(lq_dir), "gt": str(gt_dir), "patch_size": 32, "scale": 4})
    assert isinstance(paired, PairedFolders) and paired.batch(2, _gen())["lq"].shape == (2, 3, 8, 8)
