"""The Hugging Face hub: fetching a repository (or one file of it) into the local cache, and
pushing a published folder (needs huggingface_hub; pushing needs a token too).

Fetching honours ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1`` (then only the cache is read), so a
model fetched once loads again without network access.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

__all__ = ["push_to_hub", "download"]


def download(repo_id: str, revision: Optional[str] = None, filename: Optional[str] = None) -> Path:
    """The local path of hub repository ``repo_id`` ('owner/name') at ``revision``: its snapshot
    folder, or the one file ``filename`` in it. Errors say how to do without network access."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"a hub id looks like 'owner/name', got {repo_id!r}")
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError(f"loading hub id {repo_id!r} needs huggingface_hub: pip install huggingface_hub") from exc
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    common = dict(revision=revision, cache_dir=os.environ.get("HF_HUB_CACHE"), local_files_only=offline)
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename, **common))
        return Path(huggingface_hub.snapshot_download(repo_id, **common))
    except Exception as exc:
        what = f"{filename!r} of hub repository {repo_id!r}" if filename else f"hub repository {repo_id!r}"
        raise FileNotFoundError(
            f"could not fetch {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Without network access, download the folder elsewhere and pass its local path."
        ) from None


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
