"""Submissions as archives, folders and git repositories: each attack on the unpacking refused."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from provisioning.hosted import sources
from provisioning.hosted.sources import (
    SourceError,
    clone_git,
    copy_folder_sync,
    unpack_archive_sync,
)


def make_zip(path: Path, members: dict[str, bytes], *, link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo("evil-link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link)
    return path


def make_tar(
    path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None
) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                tf.addfile(info)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_a_github_style_zip_unpacks_to_its_single_folder(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "repo.zip", {"repo-main/main.py": b"print(1)\n", "repo-main/lib/a.py": b"x"}
    )
    root = unpack_archive_sync(archive, tmp_path / "out")
    assert root.name == "repo-main"
    assert (root / "main.py").read_bytes() == b"print(1)\n"
    assert (root / "lib" / "a.py").exists()


def test_a_tar_gz_with_an_inner_link_unpacks(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "repo.tar.gz",
        [tar_member("main.py"), tar_member("alias.py", tarfile.SYMTYPE, "main.py")],
        {"main.py": b"print(2)\n"},
    )
    root = unpack_archive_sync(archive, tmp_path / "out")
    assert (root / "alias.py").read_bytes() == b"print(2)\n"
    assert not (root / "alias.py").is_symlink()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"/etc/cron.d/x": b"x"}, "absolute path"),
        ({"../outside.py": b"x"}, "'..' leaves the submission"),
        ({"a/../../outside.py": b"x"}, "'..' leaves the submission"),
        ({"C:/win.py": b"x"}, "absolute path"),
        ({"a\\..\\b.py": b"x"}, "backslashes"),
    ],
)
def test_zip_paths_that_escape_are_refused(
    tmp_path: Path, members: dict[str, bytes], message: str
) -> None:
    archive = make_zip(tmp_path / "bad.zip", members)
    with pytest.raises(SourceError, match=message):
        unpack_archive_sync(archive, tmp_path / "out")
    assert not (tmp_path / "outside.py").exists()


def test_zip_symlinks_are_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "link.zip", {"main.py": b""}, link="/etc/shadow")
    with pytest.raises(SourceError, match="symbolic link"):
        unpack_archive_sync(archive, tmp_path / "out")


def test_a_zip_bomb_is_refused_by_its_ratio(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (20 * 2**20)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(SourceError, match="zip bomb"):
        unpack_archive_sync(archive, tmp_path / "out")


def test_too_many_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_FILES", 10)
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.py": b"" for i in range(11)})
    with pytest.raises(SourceError, match="more than 10 files"):
        unpack_archive_sync(archive, tmp_path / "out")


def test_too_many_bytes_are_refused_counting_what_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_BYTES", 1000)
    archive = make_zip(tmp_path / "big.zip", {"a.txt": os.urandom(600), "b.txt": os.urandom(600)})
    with pytest.raises(SourceError, match="MB unpacked"):
        unpack_archive_sync(archive, tmp_path / "out")


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tar_member("/abs.py"), "absolute path"),
        (tar_member("../up.py"), "'..' leaves"),
        (tar_member("link", tarfile.SYMTYPE, "/etc/shadow"), "absolute target"),
        (tar_member("link", tarfile.SYMTYPE, "../../etc/shadow"), "leaves the tree"),
        (tar_member("a/link", tarfile.SYMTYPE, "../../x"), "leaves the tree"),
        (tar_member("hard", tarfile.LNKTYPE, "../../etc/passwd"), "leaves the tree"),
        (tar_member("hard", tarfile.LNKTYPE, "/etc/passwd"), "absolute target"),
        (tar_member("dev", tarfile.CHRTYPE), "devices"),
        (tar_member("fifo", tarfile.FIFOTYPE), "devices"),
    ],
)
def test_tar_attacks_are_refused(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [tar_member("main.py"), member], {"main.py": b""})
    with pytest.raises(SourceError, match=message):
        unpack_archive_sync(archive, tmp_path / "out")


def test_a_link_then_a_file_through_it_cannot_write_outside(tmp_path: Path) -> None:
    """The classic: a symlink ``d -> /tmp/x`` then a file ``d/evil``; links are never created."""
    (tmp_path / "victim").mkdir()
    archive = make_tar(
        tmp_path / "bad.tar.gz",
        [tar_member("d", tarfile.SYMTYPE, str(tmp_path / "victim")), tar_member("d/evil")],
        {"d/evil": b"owned"},
    )
    with pytest.raises(SourceError):
        unpack_archive_sync(archive, tmp_path / "out")
    assert not (tmp_path / "victim" / "evil").exists()


def test_not_an_archive_and_other_kinds_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="not a readable .zip"):
        unpack_archive_sync(junk, tmp_path / "out")
    with pytest.raises(SourceError, match="expected a .zip or .tar.gz"):
        unpack_archive_sync(tmp_path / "x.rar", tmp_path / "out2")


def test_a_folder_is_copied_without_git_or_venv_and_links_out_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / ".git").mkdir(parents=True)
    (src / ".venv").mkdir()
    (src / "main.py").write_text("x")
    (src / ".git" / "config").write_text("x")
    dest = copy_folder_sync(src, tmp_path / "dest")
    assert sorted(p.name for p in dest.iterdir()) == ["main.py"]
    (src / "secret").symlink_to("/etc/hostname")
    with pytest.raises(SourceError, match="outside the folder"):
        copy_folder_sync(src, tmp_path / "dest2")


def git(*args: str, cwd: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


async def refuse(host: str, port: int) -> str:
    raise ValueError(f"refused: {host} is not allowed here")


async def test_git_urls_other_than_public_https_are_refused(tmp_path: Path) -> None:
    for url in (
        "ssh://git@example.com/x.git",
        "git://example.com/x",
        "http://example.com/x.git",
        f"file://{tmp_path}",
        str(tmp_path),
    ):
        with pytest.raises(SourceError, match="only public https://"):
            await clone_git(url, tmp_path / "c", check=refuse)
    with pytest.raises(SourceError, match="credentials"):
        await clone_git("https://u:p@example.com/x.git", tmp_path / "c", check=refuse)
    # The host check decides (nothing is sent: it refuses before git starts).
    with pytest.raises(SourceError, match="refused: 127.0.0.1 is not allowed"):
        await clone_git("https://127.0.0.1/x.git", tmp_path / "c", check=refuse)
    assert not (tmp_path / "c").exists()


async def test_a_local_repository_is_cloned_shallow_without_git_dir(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "main.py").write_text("print('v1')\n")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    (repo / "main.py").write_text("print('v2')\n")
    git("commit", "-q", "-am", "two", cwd=repo)
    dest = await clone_git(str(repo), tmp_path / "clone", check=refuse, allow_local_path=True)
    assert (dest / "main.py").read_text() == "print('v2')\n"
    assert not (dest / ".git").exists()
