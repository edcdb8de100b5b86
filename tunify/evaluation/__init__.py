"""Evaluation: what λ does to a tuned model, as numbers, curves and pictures.

    from tunify import from_zoo
    from tunify.evaluation import sweep
    result = sweep(from_zoo("nafnet-grain-s25"), "skimage:astronaut,camera",
                   degradation=[{"type": "gaussian_noise", "sigma": 25}], out_dir="runs/sweep")
    print(result.table())        # markdown: PSNR, SSIM, losses, NIQE, LPIPS per λ, and the input

``tunify sweep MODEL --images DIR`` does the same from the command line. Plots need
matplotlib (imported only when drawing); NIQE needs basicsr; LPIPS needs the lpips package
and AlexNet weights already in the torch hub cache (nothing is ever downloaded).
"""
from .inputs import Sample, is_paired_folder, prepare_inputs
from .plots import image_grid, plot_metrics, plot_perception_distortion, require_matplotlib
from .quality import lpips_distance, lpips_unavailable, lpips_weights_path, niqe, niqe_fits, niqe_unavailable
from .labels import metric_label
from .result import SWEEP_FORMAT, SweepResult
from .sweep import METRICS, check_metrics, parse_lams, sweep, sweep_lams

__all__ = [
    "sweep",
    "SweepResult",
    "METRICS",
    "check_metrics",
    "parse_lams",
    "sweep_lams",
    "SWEEP_FORMAT",
    "prepare_inputs",
    "is_paired_folder",
    "Sample",
    "metric_label",
    "plot_metrics",
    "plot_perception_distortion",
    "image_grid",
    "require_matplotlib",
    "niqe",
    "niqe_fits",
    "niqe_unavailable",
    "lpips_distance",
    "lpips_unavailable",
    "lpips_weights_path",
]
