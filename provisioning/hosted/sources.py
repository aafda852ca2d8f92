"""Bring a submission's files into a fresh directory: a folder, a ``.zip``/``.tar.gz`` archive,
or a public git repository — each under the same caps, refusing what could escape.

Archives are untrusted: no absolute paths, no ``..``, no links (symbolic or hard) that leave the
tree, no devices or FIFOs, at most :data:`MAX_FILES` files and :data:`MAX_BYTES` unpacked, and
no member whose unpacked size is more than :data:`MAX_RATIO` times its packed size (a zip bomb).
Sizes are counted on the bytes actually written, never taken from the archive's headers.

Git: https only, ``git clone --depth 1`` with no submodules, no prompts, a time limit and the
same caps. The host must be vetted by the caller-supplied ``check`` (the grader's URL guard lives
above this package); the address it returns is pinned for git with ``http.curloptResolve``
(https://git-scm.com/docs/git-config#Documentation/git-config.txt-httpcurloptResolve) so that a
second DNS answer cannot send the clone elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

MAX_BYTES = 50 * 1024 * 1024  # unpacked
MAX_FILES = 5_000
MAX_ARCHIVE_BYTES = 50 * 1024 * 1024  # packed
MAX_RATIO = 100  # unpacked / packed, per member (a zip bomb goes far beyond: ~1000)
RATIO_FLOOR_BYTES = 1024 * 1024  # members smaller than this are not ratio-checked
GIT_TIMEOUT_S = 60.0
SKIPPED_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache"}

HostCheck = Callable[[str, int], Awaitable[str]]
"""``await check(host, port)`` returns the address to connect to, or raises ValueError (or a
subclass such as ``grading.urlguard.TargetRefused``) saying why the host is refused."""


class SourceError(ValueError):
    """The submission cannot be taken; ``str()`` is a sentence for the learner."""


@dataclass
class _Budget:
    files: int = 0
    bytes: int = 0

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > MAX_FILES:
            raise SourceError(f"more than {MAX_FILES} files (at {name})")

    def add_bytes(self, n: int, name: str) -> None:
        self.bytes += n
        if self.bytes > MAX_BYTES:
            raise SourceError(f"more than {MAX_BYTES // 2**20} MB unpacked (at {name})")


def _safe_relative(name: str) -> PurePosixPath:
    """The member's path inside the tree, or SourceError for absolute paths and ``..``."""
    if "\x00" in name or "\\" in name:
        raise SourceError(f"refused member {name!r}: backslashes and NULs are not allowed")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise SourceError(f"refused member {name!r}: absolute path")
    if ".." in path.parts:
        raise SourceError(f"refused member {name!r}: '..' leaves the submission")
    return path


def _copy_capped(src, dest: Path, budget: _Budget, name: str, packed: int | None) -> None:  # type: ignore[no-untyped-def]
    written = 0
    with dest.open("wb") as sink:
        while chunk := src.read(1 << 16):
            written += len(chunk)
            budget.add_bytes(len(chunk), name)
            if (
                packed is not None
                and written > RATIO_FLOOR_BYTES
                and written > MAX_RATIO * max(packed, 1)
            ):
                raise SourceError(
                    f"refused member {name!r}: unpacks to over {MAX_RATIO}x its packed size "
                    "(a zip bomb?)"
                )
            sink.write(chunk)


def _extract_zip(archive: Path, dest: Path) -> None:
    budget = _Budget()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"not a readable .zip archive ({exc})") from None
    with zf:
        for info in zf.infolist():
            rel = _safe_relative(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise SourceError(f"refused member {info.filename!r}: symbolic link")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise SourceError(f"refused member {info.filename!r}: not a file or directory")
            target = dest / rel
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            budget.add_file(info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    _copy_capped(src, target, budget, info.filename, info.compress_size)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise SourceError(f"cannot unpack {info.filename!r} ({exc})") from None
            if mode & 0o111:
                target.chmod(0o755)


def _extract_tar(archive: Path, dest: Path) -> None:
    budget = _Budget()
    packed = archive.stat().st_size
    links: list[tuple[tarfile.TarInfo, Path]] = []
    try:
        tf = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed below, errors differ
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"not a readable .tar.gz archive ({exc})") from None
    with tf:
        try:
            for member in tf:
                rel = _safe_relative(member.name)
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isreg():
                    budget.add_file(member.name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    if src is None:
                        raise SourceError(f"cannot unpack {member.name!r}")
                    with src:
                        _copy_capped(src, target, budget, member.name, None)
                    if budget.bytes > MAX_RATIO * max(packed, 1) > RATIO_FLOOR_BYTES:
                        raise SourceError(
                            f"refused: the archive unpacks to over {MAX_RATIO}x its size "
                            "(a tar bomb?)"
                        )
                    if member.mode & 0o111:
                        target.chmod(0o755)
                elif member.issym() or member.islnk():
                    budget.add_file(member.name)
                    links.append((member, target))
                else:
                    raise SourceError(
                        f"refused member {member.name!r}: devices, FIFOs and other special "
                        "files are not allowed"
                    )
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"cannot unpack the archive ({exc})") from None
    for member, target in links:
        _place_link(member, target, dest)


def _place_link(member: tarfile.TarInfo, target: Path, root: Path) -> None:
    """Links become copies of what they name inside the tree; anything leaving it is refused."""
    link = PurePosixPath(member.linkname)
    if link.is_absolute():
        raise SourceError(f"refused link {member.name!r} -> {member.linkname!r}: absolute target")
    base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
    resolved = os.path.normpath(str(base / link))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise SourceError(f"refused link {member.name!r} -> {member.linkname!r}: leaves the tree")
    source = root / resolved
    real_root = root.resolve()
    if not source.resolve().is_relative_to(real_root):
        raise SourceError(f"refused link {member.name!r} -> {member.linkname!r}: leaves the tree")
    if not source.is_file():
        raise SourceError(f"refused link {member.name!r} -> {member.linkname!r}: not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _copy_folder(folder: Path, dest: Path) -> None:
    budget = _Budget()
    root = folder.resolve()
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        here = Path(current)
        for d in dirs:
            if (here / d).is_symlink():
                raise SourceError(f"refused {here / d}: a symbolic link to a directory")
            (dest / (here / d).relative_to(root)).mkdir(parents=True, exist_ok=True)
        for f in sorted(files):
            path = here / f
            rel = path.relative_to(root)
            real = path.resolve()
            if not real.is_relative_to(root):
                raise SourceError(f"refused {rel}: a link to a file outside the folder")
            if not real.is_file():
                raise SourceError(f"refused {rel}: not a regular file")
            budget.add_file(str(rel))
            with real.open("rb") as src:
                _copy_capped(src, dest / rel, budget, str(rel), None)
            if real.stat().st_mode & 0o111:
                (dest / rel).chmod(0o755)


def _single_top_dir(dest: Path) -> Path:
    """GitHub-style archives wrap everything in one folder: use it as the root."""
    entries = [p for p in dest.iterdir() if p.name not in {"__MACOSX"}]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


def _archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    raise SourceError(f"{path.name}: expected a .zip or .tar.gz archive")


def unpack_archive_sync(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into the empty directory ``dest``; return the submission's root
    (``dest`` or its single top-level folder). Raises :class:`SourceError`."""
    kind = _archive_kind(archive)
    size = archive.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise SourceError(f"{archive.name} is {size / 2**20:.1f} MB (at most 50 MB)")
    dest.mkdir(parents=True, exist_ok=True)
    (_extract_zip if kind == "zip" else _extract_tar)(archive, dest)
    return _single_top_dir(dest)


def copy_folder_sync(folder: Path, dest: Path) -> Path:
    """Copy a local folder (without ``.git``, virtualenvs and caches) into ``dest``."""
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    _copy_folder(folder, dest)
    return dest


def is_git_url(text: str) -> bool:
    """Whether ``text`` names a git repository rather than a local path or archive."""
    lowered = text.strip().lower()
    return "://" in lowered or lowered.startswith("git@") or lowered.endswith(".git")


async def _run_git(args: list[str], cwd: Path, timeout_s: float) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ALLOW_PROTOCOL": "https:file",
        "LC_ALL": "C",
    }
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        raise SourceError(f"git clone took over {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-3:]
        raise SourceError("git clone failed: " + " / ".join(tail))


async def clone_git(
    url: str,
    dest: Path,
    *,
    check: HostCheck,
    allow_local_path: bool = False,
    timeout_s: float = GIT_TIMEOUT_S,
) -> Path:
    """Shallow-clone a public ``https://`` repository into ``dest`` (which must not exist).

    ``check(host, port)`` vets the host and returns the address to pin. ``allow_local_path``
    (tests only) accepts a path to a local repository instead of a URL. Raises
    :class:`SourceError` for refused URLs, failed clones and clones over the caps.
    """
    text = url.strip()
    if allow_local_path and Path(text).is_dir():
        source, pin = str(Path(text).resolve()), None
    else:
        parts = urlsplit(text)
        if parts.scheme.lower() != "https":
            raise SourceError(
                f"refused {text!r}: only public https:// git URLs are accepted "
                "(not ssh, git://, http:// or file://)"
            )
        if parts.username or parts.password:
            raise SourceError("refused: git URLs with credentials are not accepted")
        if not parts.hostname:
            raise SourceError(f"refused {text!r}: no host")
        port = parts.port or 443
        try:
            address = await check(parts.hostname, port)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        source = text
        pin = f"{parts.hostname}:{port}:{address}"
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    args = ["-c", "protocol.file.allow=" + ("always" if pin is None else "never")]
    if pin is not None:
        args += ["-c", f"http.curloptResolve={pin}", "-c", "http.followRedirects=false"]
    args += [
        "clone",
        "--depth",
        "1",
        "--no-recurse-submodules",
        "--single-branch",
        "--no-tags",
        "--quiet",
        source,
        str(dest),
    ]
    await _run_git(args, parent, timeout_s)
    try:
        await asyncio.to_thread(_check_tree, dest)
    except SourceError:
        await asyncio.to_thread(shutil.rmtree, dest, True)
        raise
    return dest


def _check_tree(root: Path) -> None:
    """The caps and the no-escape rule on a cloned tree (``.git`` is dropped)."""
    shutil.rmtree(root / ".git", ignore_errors=True)
    budget = _Budget()
    real_root = root.resolve()
    for current, dirs, files in os.walk(root):
        here = Path(current)
        for name in [*dirs, *files]:
            path = here / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                raise SourceError(f"refused {path.relative_to(root)}: a link leaving the tree")
        for name in files:
            path = here / name
            budget.add_file(str(path.relative_to(root)))
            if not path.is_symlink():
                budget.add_bytes(path.stat().st_size, str(path.relative_to(root)))
