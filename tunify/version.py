"""The tunify version, in a module of its own so that every package can read it without
importing the package root (which imports them all)."""
__all__ = ["__version__"]

__version__ = "0.1.0"
