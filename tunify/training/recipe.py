"""Recipes: one YAML file that says what to tune, on what, towards which objectives.

    recipe = load_recipe("recipes/quickstart.yaml", overrides=["optim.steps=50"], smoke=False)

Every section is a typed dataclass below; unknown keys fail with a did-you-mean, ``--set``
overrides are parsed as YAML scalars (never evaluated), and a recipe may carry a ``smoke:``
mapping of dotted overrides applied by ``--smoke`` (a tiny run for CI).
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from .freeze import frozen_indices
from .schema import did_you_mean, load_yaml_text, parse, set_dotted

__all__ = [
    "Recipe", "ModelSpec", "TunifySpec", "ObjectiveSpec", "LossSpec", "DataSpec", "LamSpec", "OptimSpec",
    "ValidationSpec", "OutputSpec", "PretrainSpec", "load_recipe", "parse_recipe", "parse_override",
]


@dataclass
class ModelSpec:
    # registry name, "timm:<name>" or "package.module:Class"; None when `weights` is a model
    # file spandrel reads (architecture and hyper-parameters come from the file)
    arch: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)
    weights: Optional[str] = None              # local path or URL of pretrained weights, or a model file
    weights_key: str = "auto"                  # params_ema | params | state_dict | model | none | auto
    strict: bool = True

    def validate(self, where: str) -> None:
        if self.arch is None and not self.weights:
            raise ValueError(f"{where}: give `arch` (a registry name, timm:<name> or package.module:Class), or "
                             "`weights` naming a model file (.pth/.pt/.ckpt/.safetensors) whose architecture spandrel detects")
        if self.arch is None and self.kwargs:
            raise ValueError(f"{where}.kwargs: a model file brings its own hyper-parameters; drop kwargs or give `arch`")


@dataclass
class TunifySpec:
    targets: Optional[List[str]] = None
    exclude: Optional[List[str]] = None
    lam_space: Literal["simplex", "box"] = "simplex"
    mode: Literal["auto", "fx", "module"] = "auto"
    rank: Optional[int] = None                 # low-rank deltas W_0 + Σ λ_i B_i A_i (None: p full kernels)

    def validate(self, where: str) -> None:
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"{where}.rank: {self.rank} is not a rank; give a positive integer (e.g. 4) or leave it "
                             "out for full kernels")


TARGET_NAMES = ("clean", "input", "original")  # original: the pretrained network's own output


@dataclass
class ObjectiveSpec:
    name: str
    losses: List[Dict[str, Any]] = field(default_factory=list)  # {type: L1Loss, loss_weight: 1.0}; may be empty in loss mode 'targets'
    target: Any = "clean"                      # "clean" | "input" | "original" | degradation spec(s) of the clean image
    description: str = ""                      # what this λ corner means, for people
    frozen: bool = False                       # kernels stay pretrained: this corner is the original network exactly

    def validate(self, where: str) -> None:
        if isinstance(self.target, str) and self.target not in TARGET_NAMES and not self.target.startswith("stage"):
            raise ValueError(
                f"{where}.target: {self.target!r} is not 'clean', 'input', 'original', a stage or a target spec"
                f".{did_you_mean(self.target, TARGET_NAMES)}"
            )


@dataclass
class LossSpec:
    """How the p objectives combine: ``sum`` L(λ) = Σ λ_i L_i, or ``targets``: ``losses``
    against the interpolated target base + Σ λ_i (T_i − base) (independent knobs)."""

    mode: Literal["sum", "targets"] = "sum"
    base: Any = "input"
    losses: List[Dict[str, Any]] = field(default_factory=list)

    def validate(self, where: str) -> None:
        if self.mode == "targets" and not self.losses:
            raise ValueError(f"{where}.losses: mode 'targets' needs the loss applied to the interpolated target")


@dataclass
class DataSpec:
    train: Dict[str, Any]                      # tunify.data.build_dataset spec
    val: Optional[Dict[str, Any]] = None       # defaults to fixed crops of the training set
    batch_size: int = 8
    val_images: int = 4
    val_patch: Optional[int] = None


@dataclass
class LamSpec:
    sampler: Literal["auto", "dirichlet", "box_uniform", "fixed"] = "auto"
    alpha: float = 1.0                         # Dirichlet concentration; < 1 favours the corners
    vertex_fraction: float = 0.0               # share of samples drawn exactly at a corner
    distinct_per_batch: Optional[int] = None   # K distinct λ per batch, run as K shared-λ sub-batches
    fixed: Optional[List[float]] = None        # with sampler: fixed

    def validate(self, where: str) -> None:
        if self.alpha <= 0:
            raise ValueError(f"{where}.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.vertex_fraction <= 1:
            raise ValueError(f"{where}.vertex_fraction must be in [0, 1], got {self.vertex_fraction}")
        if self.distinct_per_batch is not None and self.distinct_per_batch < 1:
            raise ValueError(f"{where}.distinct_per_batch must be ≥ 1")
        if self.sampler == "fixed" and not self.fixed:
            raise ValueError(f"{where}: sampler 'fixed' needs `fixed: [λ_1, ..., λ_p]`")


@dataclass
class OptimSpec:
    steps: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: List[int] = field(default_factory=list)
    gamma: float = 0.5
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: Optional[float] = None
    ema_decay: float = 0.0                     # 0 turns EMA off
    freeze_non_tunable: bool = False
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    disc_lr: Optional[float] = None            # discriminators of adversarial losses; default lr

    def validate(self, where: str) -> None:
        if self.steps < 1:
            raise ValueError(f"{where}.steps must be ≥ 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"{where}.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ValueError(f"{where}.betas needs two numbers, got {self.betas}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"{where}.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class ValidationSpec:
    every: int = 0                             # steps between λ sweeps; 0: only at the end
    lam_points: int = 5                        # grid points per λ axis
    lams: Optional[List[List[float]]] = None   # explicit λ list instead of a grid


@dataclass
class OutputSpec:
    dir: str = "runs/{name}"
    checkpoint_every: int = 0                  # 0: only at the end
    keep_last: int = 2
    log_every: int = 10
    tensorboard: Literal["auto", "on", "off"] = "auto"
    progress: bool = True


@dataclass
class PretrainSpec:
    """Optional plain training before tunify (the quickstart makes its own pretrained model)."""

    steps: int
    lr: float = 1e-3
    losses: List[Dict[str, Any]] = field(default_factory=lambda: [{"type": "MSELoss"}])
    target: Any = "clean"


@dataclass
class Recipe:
    name: str
    model: ModelSpec
    objectives: List[ObjectiveSpec]
    data: DataSpec
    tunify: TunifySpec = field(default_factory=TunifySpec)
    loss: LossSpec = field(default_factory=LossSpec)
    lam: LamSpec = field(default_factory=LamSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    pretrain: Optional[PretrainSpec] = None
    seed: int = 0
    smoke: Dict[str, Any] = field(default_factory=dict)  # dotted overrides for --smoke

    def validate(self, where: str) -> None:
        names = [o.name for o in self.objectives]
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError(f"{where}.objectives: need p ≥ 1 objectives with unique names, got {names}")
        if self.loss.mode == "sum":
            for i, o in enumerate(self.objectives):
                if not o.losses:
                    raise ValueError(f"{where}.objectives[{i}].losses: an objective needs at least one loss "
                                     "(or use loss.mode 'targets' with shared loss.losses)")
        try:
            frozen_indices(self.objectives, self.tunify.lam_space)
        except ValueError as e:
            raise ValueError(f"{where}.{e}") from None

    @property
    def p(self) -> int:
        return len(self.objectives)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the resolved recipe (what the model card and checkpoints record)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def output_dir(self) -> Path:
        return Path(self.output.dir.format(name=self.name))


def parse_override(text: str) -> tuple:
    """``"optim.lr=1e-3"`` → ("optim.lr", 0.001); the value is read as YAML, never evaluated."""
    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE (e.g. optim.lr=1e-4), got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ValueError(f"--set {text!r} has an empty key")
    return key.strip(), load_yaml_text(value) if value.strip() else ""


def parse_recipe(data: Dict[str, Any], overrides: Sequence[str] = (), smoke: bool = False, where: str = "recipe") -> Recipe:
    """Validate a recipe dict after applying ``smoke`` overrides, then ``--set`` ones."""
    data = copy.deepcopy(data)
    if smoke:
        for key, value in (data.get("smoke") or {}).items():
            set_dotted(data, key, value)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(data, key, value)
    return parse(Recipe, data, where)


def load_recipe(path: Union[str, Path], overrides: Sequence[str] = (), smoke: bool = False) -> Recipe:
    """Read and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    data = load_yaml_text(path.read_text())
    return parse_recipe(data, overrides, smoke, where=path.name)
