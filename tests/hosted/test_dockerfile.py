"""A Dockerfile's base images (checked on the engine before a build), and a manifest whose
dockerfile build leaves a command out."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.hosted.dockerfile import DockerfileError, base_images
from provisioning.hosted.manifest import IMAGE_COMMAND, ManifestError, parse_manifest
from provisioning.sandbox.learner_image import LearnerImage


def test_base_images_follow_args_stages_and_copy_from() -> None:
    text = (
        "# escape=`\n"
        "ARG VERSION=3.12\n"
        "# a comment\n"
        "FROM python:${VERSION}-slim AS build\n"
        "RUN echo one `\n"
        "    two\n"
        "FROM build\n"
        "COPY --from=build /a /b\n"
        "COPY --from=0 /a /c\n"
        "COPY --from=nginx:1 /etc/nginx /x\n"
        "from scratch\n"
    )
    assert base_images(text) == ["python:3.12-slim", "nginx:1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RUN echo hi\n", "no FROM line"),
        ("FROM $BASE\n", "line 1 (FROM): $BASE has no value"),
        ("FROM --platform=linux/arm64 alpine\n", "line 1 (FROM): --platform is not supported"),
        ("FROM alpine AS\n", "line 1 (FROM): expected FROM IMAGE [AS NAME]"),
    ],
)
def test_unreadable_from_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        base_images(text)
    assert str(info.value).startswith(message), info.value


def test_a_dockerfile_build_may_leave_a_command_out(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    text = '[build]\ndockerfile = "Dockerfile"\n[processes.web]\nreplicas = 2\n'
    manifest = parse_manifest(text, tmp_path)
    assert (manifest.build_kind, manifest.build_file) == ("dockerfile", "Dockerfile")
    assert manifest.web.command == IMAGE_COMMAND and manifest.web.replicas == 2


def test_only_a_dockerfile_build_may_leave_a_command_out(tmp_path: Path) -> None:
    text = "[processes.web]\nreplicas = 1\n[processes.worker]\nreplicas = 1\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, tmp_path)
    assert str(info.value).splitlines() == [
        f"cruscible.toml: processes.{name}.command: required (only a dockerfile build may "
        "leave it out, to run the image's CMD)"
        for name in ("web", "worker")
    ]


def test_an_image_runs_its_entrypoint_and_cmd_from_its_workdir() -> None:
    image = LearnerImage.from_attrs(
        {
            "Id": "sha256:abc",
            "Config": {
                "Env": ["PATH=/opt/bin:/usr/bin", "GREETING=a=b"],
                "Entrypoint": ["/opt/bin/serve"],
                "Cmd": ["--port", "it's"],
                "WorkingDir": "/srv/my app",
            },
        }
    )
    env = image.process_env({"PORT": "8000", "DATABASE_URL": "postgresql://x"})
    assert env["PATH"] == "/opt/bin:/usr/bin" and env["GREETING"] == "a=b"
    assert env["PORT"] == "8000" and env["HOME"] == "/tmp"
    assert env["CRUSCIBLE_IMAGE_COMMAND"] == "/opt/bin/serve --port 'it'\"'\"'s'"
    assert image.wrap("make run") == "cd '/srv/my app' || exit 126\nmake run"
    supervisor = image.supervisor_env()
    assert supervisor["GREETING"] == "" and supervisor["LD_PRELOAD"] == ""
    assert supervisor["PATH"] == "/usr/bin:/bin"
