"""Tunable layers: K stacked kernels mixed per call. They know nothing of training or graphs."""
from .base import (TunableLayer, coeff_scope, current_coeffs, expand_rows, mix, row_groups, scope_reads, split_by_rows,
                   stack_kernels)
from .cache import cached_mix, clear_kernel_cache, kernel_cache_size
from .conv import TunableConv2d, TunableConvTranspose2d
from .forms import autotune, clear_form_choices, forced_form, form_choices, form_state, load_form_state
from .linear import TunableLinear
from .lowrank import LOWRANK_SUFFIXES, LowRankLayer, LowRankLinear, mixed_weight
from .lowrank_conv import LowRankConv2d
from .module_layer import TunableModuleLayer
from .functional import tunable_conv2d, tunable_linear
from .parameter import TunableParameter, broadcastable, mix_parameter
from .operand import mix_operand, mix_operand_reshaped
from .rows import RowsNotSeparable, run_by_rows
from .owner_split import ROWS, output_difference, quiet, random_draws, row_owners, row_tensors, row_tolerance, split_at_owners
from .weight_norm import TunableWeightNormConv2d, weight_norm_of

# Names (suffixes) of the tensors that hold one slice per kernel on their leading axis: the
# stacks of conv/linear layers, weight-normalised convs and parametrized weight-like tensors.
# Training (freezing an objective, freezing the rest) and checks find them by these alone.
PER_OBJECTIVE_SUFFIXES = (".weights", ".biases", ".weights_g", ".weights_v", ".original") + LOWRANK_SUFFIXES

__all__ = [
    "PER_OBJECTIVE_SUFFIXES",
    "TunableLayer",
    "TunableModuleLayer",
    "TunableConv2d",
    "TunableConvTranspose2d",
    "TunableWeightNormConv2d",
    "weight_norm_of",
    "TunableLinear",
    "LowRankLayer",
    "LowRankConv2d",
    "LowRankLinear",
    "LOWRANK_SUFFIXES",
    "mixed_weight",
    "TunableParameter",
    "coeff_scope",
    "current_coeffs",
    "scope_reads",
    "autotune",
    "clear_form_choices",
    "forced_form",
    "form_choices",
    "form_state",
    "load_form_state",
    "expand_rows",
    "mix",
    "mix_parameter",
    "mix_operand",
    "mix_operand_reshaped",
    "split_by_rows",
    "RowsNotSeparable",
    "row_groups",
    "run_by_rows",
    "ROWS",
    "row_owners",
    "row_tensors",
    "output_difference",
    "row_tolerance",
    "quiet",
    "random_draws",
    "split_at_owners",
    "stack_kernels",
    "broadcastable",
    "cached_mix",
    "clear_kernel_cache",
    "kernel_cache_size",
    "tunable_conv2d",
    "tunable_linear",
]
