"""The interactive demo: a local page to upload an image and move λ."""
from .server import DemoApp, serve

__all__ = ["DemoApp", "serve"]
