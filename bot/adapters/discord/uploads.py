"""Attached code: a ``.zip``/``.tar.gz`` attachment of ``/submit``, downloaded under the data
dir with a size cap before it is queued.

Discord declares each attachment's ``size`` in bytes and serves it from its CDN
(https://discord.com/developers/docs/resources/message#attachment-object); the cap is checked
on the declared size first, then again on the bytes received.
"""

from __future__ import annotations

from pathlib import Path

import discord

from bot.core.errors import CoachError
from bot.core.sources import MAX_ARCHIVE_BYTES, Upload, check_upload


async def download(
    attachment: discord.Attachment, data_dir: Path, *, cap: int = MAX_ARCHIVE_BYTES
) -> Path:
    """The attachment stored under ``data_dir/uploads``; :class:`CoachError` when it is not an
    archive, is over ``cap`` bytes, or cannot be downloaded (nothing is left behind then)."""
    check_upload(attachment.filename, attachment.size, cap=cap)
    upload = Upload(data_dir, attachment.filename, cap=cap)
    try:
        upload.write(await attachment.read())
        return upload.close()
    except discord.HTTPException as exc:
        upload.discard()
        raise CoachError(
            f"could not download {attachment.filename!r} (HTTP {exc.status}); attach it again"
        ) from None
    except BaseException:
        upload.discard()
        raise
