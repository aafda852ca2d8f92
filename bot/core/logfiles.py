"""A hosted submission's full logs as files for a chat learner: the masked copies its record
keeps (``<data_dir>/submissions/<id>/logs/``: ``build.log``, ``<process>-<replica>.log``, what
``cruscible logs`` shows), masked again with every secret the bot knows, trimmed to fit one chat
message, and attached to the private message that tells the learner what went wrong.

Size: one message carries at most :data:`MESSAGE_BYTES` of files in all, below Discord's
smallest upload limit (8 MiB for a server without boosts and for DMs; boosts raise it to 25 MiB
and more; an upload over the limit is refused with 413, JSON code 40005 "Request entity too
large": https://discord.com/developers/docs/reference#uploading-files,
https://discord.com/developers/docs/topics/opcodes-and-status-codes#json). Slack takes files up
to 1 GB (https://slack.com/help/articles/201330736-Add-files-to-Slack) but refuses an empty one
(``files.getUploadURLExternal``: ``missing_argument`` when ``length`` is 0,
https://docs.slack.dev/reference/methods/files.getUploadURLExternal/): empty logs are left out.
A log over its share keeps its last bytes, after a first line saying how much was cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bot.logs import SECRETS
from provisioning.hosted import logs
from provisioning.hosted.submission import RECORDS

MESSAGE_BYTES = 7 * 2**20  # all files of one message; room left for the embed and the form
NOTE_BYTES = 200  # the trim note's budget
SHARED = "shared"  # <record>/shared/: the copies handed to the chat adapter


def log_files(
    data_dir: Path,
    sub_id: str,
    secrets: Iterable[str] = (),
    *,
    budget: int = MESSAGE_BYTES,
) -> list[Path]:
    """The kept logs of submission ``sub_id`` as files to attach (build first, then each
    process's replicas), together at most ``budget`` bytes; each masked with ``secrets`` and
    the bot's known secrets (``bot.logs.SECRETS``), trimmed to its share with a note, written
    under the record's ``shared/`` folder. ``[]`` when the record or its logs are missing."""
    folder = data_dir / RECORDS / sub_id / "logs"
    names = sorted(
        (p for p in folder.glob("*.log") if p.is_file() and not p.is_symlink()),
        key=lambda p: (p.name != "build.log", p.name),
    )
    texts = [(p.name, _masked(p, tuple(secrets))) for p in names]
    texts = [(name, text) for name, text in texts if text.strip()]
    if not texts:
        return []
    share = budget // len(texts)
    out = data_dir / RECORDS / sub_id / SHARED
    out.mkdir(exist_ok=True)
    files = []
    for name, text in texts:
        dest = out / name
        dest.write_bytes(trim(text.encode(), share))
        files.append(dest)
    return files


def trim(data: bytes, limit: int) -> bytes:
    """``data`` when it fits in ``limit`` bytes, else its last bytes after a one-line note of
    what was cut, the whole at most ``limit`` (``limit`` must exceed :data:`NOTE_BYTES`)."""
    if len(data) <= limit:
        return data
    keep = limit - NOTE_BYTES
    tail = data[-keep:]
    start = tail.find(b"\n") + 1  # start on a whole line (and a whole UTF-8 character)
    tail = tail[start:] if 0 < start < len(tail) else tail
    cut = len(data) - len(tail)
    note = f"[first {cut:,} bytes cut: this file keeps the last {len(tail):,} of {len(data):,}]\n"
    return note.encode() + tail


def _masked(path: Path, secrets: tuple[str, ...]) -> str:
    text, _ = logs.read_tail(path)
    return SECRETS.redact(logs.mask(text, secrets))
