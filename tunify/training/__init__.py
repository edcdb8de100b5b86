"""Training: recipes, λ samplers, stages and the training loop, checkpoints, and recipe runs."""
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .guard import RecipeChangedError, RunExistsError
from .preflight import preflight
from .recipe import Recipe, load_recipe, parse_recipe
from .run import RunResult, build_model, run_recipe, tunify_from_recipe, write_sweep
from .samplers import LamSampler, build_sampler
from .stage import Stage
from .trainer import FitResult, NonFiniteLossError, fit

__all__ = [
    "Recipe", "load_recipe", "parse_recipe", "LamSampler", "build_sampler", "fit", "FitResult",
    "NonFiniteLossError", "Stage", "run_recipe", "RunResult", "build_model", "tunify_from_recipe", "write_sweep",
    "save_checkpoint", "load_checkpoint", "latest_checkpoint", "CheckpointError", "RunExistsError",
    "RecipeChangedError", "preflight",
]
