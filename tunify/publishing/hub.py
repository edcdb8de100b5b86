"""Pushing a published folder to the Hugging Face hub (needs huggingface_hub and a token)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

__all__ = ["push_to_hub"]


def push_to_hub(folder: Union[str, Path], repo_id: str, *, token: Optional[str] = None, private: bool = False,
                commit_message: str = "Upload tunify model", dry_run: bool = False) -> List[str]:
    """Upload a folder written by ``save_pretrained`` as model repository ``repo_id``.

    Returns the files uploaded (with ``dry_run``: the files that would be, without touching
    the network — everything up to the upload runs either way).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} is not a published tunify folder (config.json and model.safetensors needed)")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise ImportError("push_to_hub needs huggingface_hub: pip install huggingface_hub") from exc
    api = HfApi(token=token)
    if dry_run:
        return files
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                      allow_patterns=files, repo_type="model")
    return files
