"""Upload the slash commands only when they changed since the last upload."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from discord import app_commands


def tree_digest(tree: app_commands.CommandTree) -> str:
    """A hash of the JSON Discord receives for the tree's global commands."""
    payload = sorted((c.to_dict(tree) for c in tree.get_commands()), key=lambda c: c["name"])
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


async def sync_if_changed(
    tree: app_commands.CommandTree, state_dir: Path, application_id: int
) -> bool:
    """Sync when the tree differs from the last sync of this application; True if it did."""
    path = state_dir / f"discord-commands-{application_id}.sha256"
    digest = tree_digest(tree)
    if path.is_file() and path.read_text().strip() == digest:
        return False
    await tree.sync()
    path.write_text(digest + "\n")
    return True
