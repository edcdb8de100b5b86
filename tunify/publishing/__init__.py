"""Publishing: tuned models as self-describing folders, the zoo, the hub."""
from .card import sweep_table, write_card
from .hub import push_to_hub
from .pretrained import from_pretrained, save_pretrained, sha256_file
from .publish import is_run_dir, load_run, publish_run, verify_card
from .resolve import Resolved, identify, resolve, resolve_model
from .settings import recipe_settings
from .zoo import add_to_zoo, from_zoo, list_zoo, zoo_entry, zoo_index

__all__ = [
    "save_pretrained", "from_pretrained", "push_to_hub", "publish_run", "verify_card", "from_zoo", "list_zoo",
    "zoo_entry", "zoo_index", "add_to_zoo", "resolve_model", "load_run", "is_run_dir", "sha256_file", "write_card", "sweep_table",
    "resolve", "identify", "Resolved", "recipe_settings",
]
