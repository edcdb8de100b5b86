"""Model surgery: plan what to convert, trace with torch.fx, swap layers, rewrite the graph."""
from .api import objective_names, register_source, tunify
from .config import TunifyConfig
from .dispatch import LAYER_TYPES, lookup_layer, register_layer
from .model import TunableModel, bake
from .plan import list_targets
from .report import Converted, Skipped, TunifyReport
from .tracer import TraceFailure

__all__ = [
    "tunify",
    "bake",
    "list_targets",
    "objective_names",
    "register_source",
    "TunableModel",
    "TunifyConfig",
    "TunifyReport",
    "Converted",
    "Skipped",
    "register_layer",
    "lookup_layer",
    "LAYER_TYPES",
    "TraceFailure",
]
