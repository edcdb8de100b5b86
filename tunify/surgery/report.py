"""What ``tunify()`` did, for people: converted layers, skipped ones with reasons, the path."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

__all__ = ["Converted", "Skipped", "TunifyReport"]


@dataclass
class Converted:
    name: str            # where it lives in the model ("blocks.0.conv1", "blocks.0.beta")
    source: str          # original type ("Conv2d", "Parameter(1, 32, 1, 1)")
    tunable: str         # tunable type
    how: str = ""        # "fx", "fx, functional call", "inside kept-whole SwinTransformerBlock", "module"
    aliases: Tuple[str, ...] = ()  # other names of the same shared layer


@dataclass
class Skipped:
    name: str
    source: str
    reason: str


@dataclass
class TunifyReport:
    """Printable account of a conversion; ``str(report)`` gives a table."""

    model: str
    path: str                                  # "fx" or "module"
    objectives: Tuple[str, ...]
    lam_space: str
    num_kernels: int
    converted: List[Converted] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)
    leaves: List[Tuple[str, str]] = field(default_factory=list)   # (type, why it is kept whole)
    per_sample: str = "native"                 # or the reason the batch is split by λ
    fallback_reason: str = ""                  # why the fx path was not used
    params_before: int = 0
    params_after: int = 0
    seconds: float = 0.0
    rank: Optional[int] = None                 # low-rank deltas (None: full kernels)
    frozen: int = 0                            # numbers in frozen base weights (low rank), not parameters

    def names(self) -> List[str]:
        return [c.name for c in self.converted]

    def summary(self) -> str:
        """The header and one line per kind of conversion (the full list is ``str(report)``)."""
        counts: dict = {}
        for c in self.converted:
            source = "Parameter" if c.source.startswith("Parameter") else c.source
            key = (source, c.tunable, c.how)
            counts[key] = counts.get(key, 0) + 1
        lines = self._header() + [f"  converted ({len(self.converted)}):"]
        lines += [f"    {n:4d} x {s} -> {t}  [{h}]" for (s, t, h), n in sorted(counts.items(), key=lambda kv: -kv[1])]
        if self.skipped:
            lines.append(f"  skipped ({len(self.skipped)}):")
            lines += [f"    {s.name}  {s.source}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def _header(self) -> List[str]:
        lines = [
            f"tunify report: {self.model}",
            f"  objectives  : p={len(self.objectives)} {', '.join(self.objectives)} "
            f"(λ space {self.lam_space}, " + (f"frozen base + rank-{self.rank} deltas per objective where smaller, "
                                              f"else {self.num_kernels} kernels)" if self.rank else
                                              f"{self.num_kernels} kernels per layer)"),
            f"  path        : {self.path}" + (f" (fx failed: {self.fallback_reason})" if self.fallback_reason else ""),
            f"  per-sample λ: {self.per_sample}",
            f"  parameters  : {self.params_before:,} -> {self.params_after:,} "
            f"(x{self.params_after / max(self.params_before, 1):.2f}), converted in {self.seconds:.2f} s"
            + (f"; + {self.frozen:,} frozen base weights (buffers)" if self.rank else ""),
        ]
        if self.leaves:
            lines.append("  kept whole (not traceable, converted inside):")
            lines += [f"    {t}: {why}" for t, why in self.leaves]
        return lines

    def __str__(self) -> str:
        lines = self._header()
        lines.append(f"  converted ({len(self.converted)}):")
        width = max([len(c.name) for c in self.converted] + [4])
        for c in self.converted:
            alias = f" (shared with {', '.join(c.aliases)})" if c.aliases else ""
            lines.append(f"    {c.name:<{width}}  {c.source} -> {c.tunable}  [{c.how}]{alias}")
        if self.skipped:
            lines.append(f"  skipped ({len(self.skipped)}):")
            lines += [f"    {s.name}  {s.source}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"TunifyReport(model={self.model!r}, path={self.path!r}, converted={len(self.converted)}, "
            f"skipped={len(self.skipped)}, per_sample={self.per_sample!r})"
        )
