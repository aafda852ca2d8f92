"""A provisioned environment: what the learner gets and what the grader may use."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from provisioning.spec import Resource


@dataclass
class ResourceInfo:
    """One running resource.

    ``learner`` holds the bundle variables this resource contributes;
    ``admin`` holds the grader's privileged access (never shown to a learner);
    ``secrets`` lists every password/key value used by either, for redaction.
    """

    kind: Resource
    host: str
    port: int
    learner: dict[str, str] = field(default_factory=dict)
    admin: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Environment:
    id: str
    owner: str
    backend: str
    label: str
    created_at: datetime
    expires_at: datetime
    resources: dict[Resource, ResourceInfo]
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def bundle(self) -> dict[str, str]:
        """The connection bundle (DESIGN.md names), resource variables then parameters."""
        out: dict[str, str] = {}
        for kind in Resource:
            if kind in self.resources:
                out.update(self.resources[kind].learner)
        out.update(self.parameters)
        return out

    def dotenv(self) -> str:
        """The bundle as a .env file; a multi-line value (``CA_CERT_PEM``) is double-quoted,
        which python-dotenv, Docker Compose and a POSIX shell's ``.`` all read back whole."""
        return "".join(
            f'{k}="{v}"\n' if "\n" in v else f"{k}={v}\n" for k, v in self.bundle.items()
        )

    def admin(self, kind: Resource) -> dict[str, str]:
        return self.resources[kind].admin

    def secrets(self) -> list[str]:
        """Every credential in this environment, for redaction."""
        return sorted({s for info in self.resources.values() for s in info.secrets if s})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat()
        data["resources"] = {
            k.value: {**asdict(v), "kind": k.value} for k, v in self.resources.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        resources = {
            Resource(k): ResourceInfo(
                kind=Resource(k),
                host=v["host"],
                port=int(v["port"]),
                learner=dict(v.get("learner", {})),
                admin=dict(v.get("admin", {})),
                secrets=list(v.get("secrets", [])),
                extra=dict(v.get("extra", {})),
            )
            for k, v in data["resources"].items()
        }
        return cls(
            id=data["id"],
            owner=data["owner"],
            backend=data["backend"],
            label=data.get("label", ""),
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            resources=resources,
            parameters=dict(data.get("parameters", {})),
        )
