"""``TunifyConfig``: what a tunable model is, owned by the model and saved with it.

Everything that used to be attached to a ``TunableModel`` after the fact (conversion options,
how the architecture is rebuilt, the recipe and checkpoint it came from, measured metrics)
lives here, so ``save_pretrained``, ``from_pretrained``, publishing, sweeps, export and the
demo read one typed object instead of guessing at attributes.

    tm = tunify(net, ["fidelity", "look"], targets=["body"])
    tm.config.objectives        # ('fidelity', 'look')
    tm.config.to_dict()         # the model's part of config.json (TunifyConfig.from_dict reads it back)

``tunify()`` fills the conversion fields; whoever knows more (a recipe, a loader) fills the
rest with :meth:`TunifyConfig.update`. Fields that are not JSON (the Recipe object, the base's
tensor digests) are kept in memory only: ``to_dict`` leaves them out.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..version import __version__

__all__ = ["TunifyConfig", "objective_entries"]

# Fields to_dict leaves out: objects (a Recipe), the base's per-tensor digests (large; an adapter
# writes only their sha256), and whether targets could be written at all.
_IN_MEMORY = ("recipe", "base_record", "serializable")


def objective_entries(objectives: Any) -> Tuple[Tuple[str, ...], Dict[str, str]]:
    """config.json's ``objectives`` (names, or {name, description} mappings) → (names, descriptions)."""
    names, descriptions = [], {}
    for o in objectives or ():
        if isinstance(o, dict):
            names.append(str(o["name"]))
            if o.get("description"):
                descriptions[str(o["name"])] = str(o["description"])
        else:
            names.append(str(o))
    return tuple(names), descriptions


@dataclass
class TunifyConfig:
    """What a tunable model is and how to rebuild it.

    Conversion (set by ``tunify()``): ``objectives`` (the p names, in λ order), ``lam_space``,
    ``targets``/``exclude`` (names or regexes; None when given as types or functions, then
    ``serializable`` is False), ``mode`` asked for and ``path`` taken ("fx" / "module"),
    ``rank`` (None: full kernels), ``base_record`` (the base weights' digests, low rank only).

    Architecture: ``arch`` and ``arch_kwargs`` (registry name, ``timm:<name>``,
    ``module:Class``), ``weights`` / ``weights_key`` (where the pretrained base came from),
    ``model_file`` (spandrel's record of a model file: arch id, shapes, scale, size rules).

    Provenance: ``name``, ``descriptions`` (what each λ corner means), ``recipe`` (the Recipe
    object, in memory) and its ``recipe_sha256``, ``step`` (the checkpoint's), ``metrics`` (a
    λ sweep in the one sweep format), ``tunify_version`` (of the code that made it).
    """

    objectives: Tuple[str, ...]
    lam_space: str = "simplex"
    targets: Optional[List[str]] = None
    exclude: Optional[List[str]] = None
    mode: str = "auto"
    path: Optional[str] = None
    rank: Optional[int] = None
    arch: Optional[str] = None
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    weights: Optional[str] = None
    weights_key: Optional[str] = None
    model_file: Optional[Dict[str, Any]] = None
    name: Optional[str] = None
    descriptions: Dict[str, str] = field(default_factory=dict)
    recipe_sha256: Optional[str] = None
    step: Optional[int] = None
    metrics: Optional[Dict[str, Any]] = None
    tunify_version: str = __version__
    recipe: Any = None
    base_record: Optional[Dict[str, Any]] = None
    serializable: bool = True

    def __post_init__(self) -> None:
        self.objectives = tuple(self.objectives)

    @property
    def p(self) -> int:
        return len(self.objectives)

    def update(self, **fields: Any) -> "TunifyConfig":
        """Set the given fields in place (an unknown name is an error, not a new attribute); returns self."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"TunifyConfig has no field {unknown[0]!r}; its fields are {', '.join(sorted(known))}")
        for key, value in fields.items():
            setattr(self, key, value)
        return self

    def with_recipe(self, recipe: Any) -> "TunifyConfig":
        """Take the name, corner descriptions and architecture a Recipe states (duck-typed:
        surgery does not import training)."""
        model = recipe.model
        return self.update(
            recipe=recipe, name=recipe.name,
            descriptions={o.name: o.description for o in recipe.objectives if o.description},
            arch=model.arch, arch_kwargs=dict(model.kwargs), weights=model.weights, weights_key=model.weights_key)

    def adopt(self, saved: "TunifyConfig") -> "TunifyConfig":
        """Take what a saved config knows beyond conversion (architecture, provenance, metrics);
        the conversion fields stay this model's own. Returns self."""
        keep = {"objectives", "lam_space", "targets", "exclude", "mode", "path", "rank", "base_record", "serializable"}
        for f in dataclasses.fields(self):
            if f.name not in keep and getattr(saved, f.name) not in (None, {}):
                setattr(self, f.name, getattr(saved, f.name))
        return self

    def objective_list(self, descriptions: Optional[Dict[str, str]] = None) -> List[Dict[str, str]]:
        """config.json's ``objectives``: [{name, description}] in λ order (``descriptions``
        instead of the config's own, e.g. a recipe's)."""
        descriptions = self.descriptions if descriptions is None else descriptions
        return [{"name": n, "description": descriptions.get(n, "")} for n in self.objectives]

    def to_dict(self) -> Dict[str, Any]:
        """The JSON fields of config.json this config holds (a save adds format, p, digests)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _IN_MEMORY}
        out["objectives"] = self.objective_list()
        out["mode"] = self.path or self.mode  # what a reader can rely on: the path that was taken
        del out["path"], out["descriptions"]
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TunifyConfig":
        """A config.json mapping (full save or adapter) → TunifyConfig; unknown keys are ignored."""
        names, descriptions = objective_entries(data.get("objectives"))
        base = data.get("base") if isinstance(data.get("base"), dict) else {}
        known = {f.name for f in dataclasses.fields(cls)} - set(_IN_MEMORY) - {"objectives", "descriptions", "mode", "path"}
        fields = {k: data[k] for k in known if k in data and data[k] is not None}
        fields.setdefault("weights", base.get("weights"))
        fields.setdefault("weights_key", base.get("weights_key"))
        return cls(objectives=names, descriptions=descriptions, path=data.get("mode"), **fields)
