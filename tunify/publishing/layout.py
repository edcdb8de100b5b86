"""The names and version of a published folder's files, and the sha256 that checks them: what
every writer and reader of a folder shares (full saves, adapters, the zoo), in a module that
imports nothing of theirs."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LEGACY_WEIGHTS", "FORMAT_VERSION", "sha256_file"]

CONFIG_NAME, WEIGHTS_NAME, LEGACY_WEIGHTS = "config.json", "model.safetensors", "pytorch_model.pth"
FORMAT_VERSION = 1


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
