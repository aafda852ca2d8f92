"""A Dockerfile's base images (checked on the engine before a build), and a manifest whose
dockerfile build leaves a command out."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    ("text", "image"),
    [
        ("FROM base\nCOPY\t--from=other/img:1 / /x\n", "other/img:1"),  # a tab ends a keyword
        ("FROM\tother/img\n", "other/img"),
        ("FROM base\nCOPY \\\n\n--from=other/img /x /x\n", "other/img"),  # blank: skipped
    ],
)
def test_images_are_found_as_docker_reads_the_lines(text: str, image: str) -> None:
    """Docker splits a keyword at any white space and skips blank lines inside a continuation
    (https://docs.docker.com/reference/dockerfile/#format): read otherwise, an image would be
    left unchecked, and the engine would pull it."""
    assert image in base_images(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM base\nADD http://169.254.169.254/latest /x\n", "put the file in your repository"),
        ("FROM base\nADD git@example.org:a/b.git /x\n", "a URL or git source"),
        ("FROM base\nLABEL cruscible.env=env-1\n", "labels named cruscible.* are the host's"),
        ('FROM base\nLABEL "Cruscible.resource"=redis\n', "labels named cruscible.*"),
        ("FROM base\nFETCH x\n", "unknown instruction 'FETCH'"),
    ],
)
def test_what_would_reach_the_network_or_the_hosts_labels_is_refused(
    text: str, message: str
) -> None:
    """``ADD <URL>`` is fetched by the engine from its own network, whatever the build's
    network mode; a container inherits its image's labels, by which the host finds its own."""
    with pytest.raises(DockerfileError, match=re.escape(message)):
        base_images(text)


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
