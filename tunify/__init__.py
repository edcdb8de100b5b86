"""tunify: make any pretrained image-to-image network tunable by a control vector λ.

    from tunify import tunify, bake
    tm = tunify(model, ["fidelity", "perception"])     # p = 2 objectives
    y = tm(x, lam=[0.3, 0.7])                          # or lam of shape (B, 2): one per sample
    plain = bake(tm, [0.3, 0.7])                       # an ordinary model at that λ
    result = sweep(tm, "photos/", degradation=[...])   # metrics, plots and an image grid across λ

Subpackages: ``tunify.training`` (recipes, fit), ``tunify.evaluation`` (sweeps),
``tunify.baselines`` (DNI, output blending, FiLM, AdaFM, Dynamic-Net), ``tunify.publishing``.
"""
from .lam import LamSpace
from .layers import (
    TunableConv2d,
    TunableConvTranspose2d,
    TunableLayer,
    TunableLinear,
    TunableModuleLayer,
    TunableParameter,
    autotune,
)
from .surgery import (
    TraceFailure,
    TunableModel,
    TunifyConfig,
    TunifyReport,
    bake,
    list_targets,
    register_layer,
    tunify,
)

from .version import __version__
from .publishing import from_pretrained, from_zoo, list_zoo, push_to_hub, save_pretrained
from .evaluation import SweepResult, sweep

__all__ = [
    "tunify",
    "bake",
    "list_targets",
    "TunableModel",
    "TunifyConfig",
    "TunifyReport",
    "TunableLayer",
    "TunableModuleLayer",
    "TunableConv2d",
    "TunableConvTranspose2d",
    "TunableLinear",
    "TunableParameter",
    "LamSpace",
    "autotune",
    "register_layer",
    "TraceFailure",
    "save_pretrained",
    "from_pretrained",
    "from_zoo",
    "list_zoo",
    "push_to_hub",
    "sweep",
    "SweepResult",
    "__version__",
]
