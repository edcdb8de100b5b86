"""Atomic, readable file writes for training runs: they live in :mod:`tunify.files` (below every
package that writes files); this name stays for code that imports them from here."""
from ..files import DIR_MODE, FILE_MODE, atomic_write_bytes, atomic_write_text, make_readable

__all__ = ["FILE_MODE", "DIR_MODE", "atomic_write_text", "atomic_write_bytes", "make_readable"]
