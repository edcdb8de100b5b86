"""Control methods that tunable kernels are measured against, over any CNN backbone.

    from tunify.baselines import DNI, OutputBlend, FiLM, AdaFM, DynamicNet
    dni = DNI([net_fidelity, net_perceptual])     # weights interpolated by λ
    film = FiLM(backbone)                         # features modulated from λ, trained on L(λ)
    y = film(x, lam=[0.3, 0.7])                   # every baseline takes λ like a TunableModel

Two-stage methods (DNI, output blending, AdaFM, Dynamic-Net) train objective 0's network
first, then the rest with the backbone frozen (AdaFM, Dynamic-Net) or copied (DNI, blending);
benchmarks/fidelity.py trains every one of them with tunify.training.fit.
"""
from .base import ControlledModel, HookedModel, feature_convs
from .interpolation import DNI, OutputBlend, interpolate_state
from .modulation import AdaFM, DynamicNet, FiLM

BASELINES = {"dni": DNI, "blend": OutputBlend, "film": FiLM, "adafm": AdaFM, "dynamic": DynamicNet}

__all__ = ["ControlledModel", "HookedModel", "feature_convs", "DNI", "OutputBlend", "interpolate_state",
           "FiLM", "AdaFM", "DynamicNet", "BASELINES"]
