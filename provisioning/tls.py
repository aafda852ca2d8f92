"""Environments reachable from elsewhere: the public host, the listen address and TLS.

By default every server listens on 127.0.0.1 in plain text (nothing here is used). When the
operator sets ``CRUSCIBLE_PUBLIC_HOST``, the local backend makes every learner-facing listener
speak TLS only, on ``CRUSCIBLE_LISTEN_HOST`` (default ``0.0.0.0``), and every bundle carries
the public host:

- the certificate is the operator's (``CRUSCIBLE_TLS_CERT`` / ``CRUSCIBLE_TLS_KEY``, PEM;
  ``CRUSCIBLE_TLS_CA`` names the CA that signed it when it is not a publicly trusted one), or
  one issued here from Cruscible's own CA, kept in ``<state dir>/tls`` (keys mode 0600);
- the CA's certificate travels with the bundle (``CA_CERT_PEM``) so that standard clients can
  verify the server: libpq's ``sslmode=verify-full`` with ``sslrootcert``/``PGSSLROOTCERT``
  (https://www.postgresql.org/docs/current/libpq-ssl.html), redis-py's ``ssl_ca_certs``,
  boto3/AWS CLI's ``AWS_CA_BUNDLE``
  (https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-envvars.html), an
  ``ssl.SSLContext`` for nats-py.

Issued certificates: the CA (EC P-256) is valid for a year; a leaf for 7 days with the public
host, the listen address and loopback as subject alternative names, re-issued when less than
a day remains or the names changed (an environment lives 8 hours at most, so a running server
never holds an expired leaf). Private keys are never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.backend import ProvisioningError

log = logging.getLogger(__name__)

ENV_PUBLIC_HOST = "CRUSCIBLE_PUBLIC_HOST"
ENV_LISTEN_HOST = "CRUSCIBLE_LISTEN_HOST"
ENV_TLS_CERT = "CRUSCIBLE_TLS_CERT"
ENV_TLS_KEY = "CRUSCIBLE_TLS_KEY"
ENV_TLS_CA = "CRUSCIBLE_TLS_CA"
CA_FILE_HINT = "cruscible-ca.pem"  # where the bundle suggests saving CA_CERT_PEM
WILDCARD = {"0.0.0.0", "::", ""}
CA_DAYS = 365
LEAF_DAYS = 7
RENEW_BEFORE = dt.timedelta(days=1)


@dataclass(frozen=True)
class Exposure:
    """How environments are exposed: who connects where, with which certificate.

    ``public_host`` is the name or address clients use; ``listen_host`` the address servers
    bind (``0.0.0.0`` for all); ``ca_file`` the CA clients verify with (``None``: the
    operator's certificate is publicly trusted and clients use their system store).
    """

    public_host: str
    listen_host: str
    cert_file: Path
    key_file: Path
    ca_file: Path | None
    issued: bool = False  # by our CA, for the public host, the listen address and loopback

    @property
    def local_host(self) -> str:
        """The address the grader (on this machine) connects to: the listen address, or
        loopback when servers listen on every address."""
        return "127.0.0.1" if self.listen_host in WILDCARD else self.listen_host

    def ca_pem(self) -> str:
        return self.ca_file.read_text() if self.ca_file is not None else ""

    def bundle_vars(self) -> dict[str, str]:
        """What every exposed resource adds to the bundle: the CA and where to save it."""
        if self.ca_file is None:
            return {}
        return {"CA_CERT_PEM": self.ca_pem().strip(), "CA_CERT_FILE": CA_FILE_HINT}

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context with the certificate (TLS 1.2 at least)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        """A client context trusting ``ca_file`` (the system store when there is none)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        ctx.check_hostname = check_hostname
        return ctx

    def renew(self) -> None:
        """Re-issue our certificate if it is near its end (a no-op for the operator's): called
        before each environment is made, so a long-running bot never hands out an expired one.
        Running servers keep the copy they were given."""
        if self.issued:
            issue(self.cert_file.parent, self.public_host, self.listen_host)

    def install(self, home: Path, own: object | None = None) -> tuple[Path, Path]:
        """Copy the certificate and key into a server's directory (key mode 0600), for servers
        that run as another user; return their paths. ``own`` is a ``RunAs.own``-like callable."""
        cert, key = home / "tls.crt", home / "tls.key"
        _write_private(cert, self.cert_file.read_bytes(), 0o644)
        _write_private(key, self.key_file.read_bytes(), 0o600)
        if callable(own):
            own(cert, key)
        return cert, key


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)


def check_public_host(value: str) -> str:
    """``value`` (stripped) if clients can name it in a URL and a certificate, else
    ``ValueError`` saying why.

    A DNS name of letters, digits and hyphens, labels of 1 to 63 characters and 253 in all
    (RFC 1123, https://www.rfc-editor.org/rfc/rfc1123#section-2.1; an international name in
    its ``xn--`` form, as certificates carry it:
    https://www.rfc-editor.org/rfc/rfc5280#section-4.2.1.6), or an IPv4
    address. No scheme, port or path; not a wildcard address (that is
    ``CRUSCIBLE_LISTEN_HOST``'s job); not an IPv6 literal (bundles' URLs would need brackets:
    give it a DNS name).
    """
    host = value.strip()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.version == 6:
            raise ValueError(f"{host!r} is an IPv6 address: give a DNS name that resolves to it")
        if address.is_unspecified:
            raise ValueError(f"{host!r} is no address clients can reach: name this machine")
        return host
    name = host
    if not name.isascii():
        raise ValueError(f"{host!r} is not ASCII: give an international name in its xn-- form")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{host!r} is not a host name (letters, digits, hyphens and dots; no scheme, "
            "port or path)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{host!r} is neither an IPv4 address nor a host name")
    return host


def check_listen_host(value: str) -> str:
    """``value`` (stripped; blank is ``0.0.0.0``) if it is an IP address to bind, else
    ``ValueError``: a name would be resolved by every relay as it starts, and written into the
    issued certificate."""
    host = value.strip() or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address of this machine to listen on (0.0.0.0: all of them)"
        ) from None
    return host


def admin_tls(admin: dict[str, str]) -> ssl.SSLContext | None:
    """The TLS context the grader connects with (exposed servers), else None.

    ``admin`` is the resource's admin map: ``ca_file`` (may be empty: the system store) and
    ``check_hostname`` are set when the server speaks TLS.
    """
    if "check_hostname" not in admin:
        return None
    ctx = ssl.create_default_context(cafile=admin.get("ca_file") or None)
    ctx.check_hostname = admin["check_hostname"] == "true"
    return ctx


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_key(path: Path, key: Any) -> None:
    """A private key as unencrypted PKCS#8 PEM, readable by its owner only."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem, 0o600)


def _names(*hosts: str) -> list[str]:
    out: list[str] = []
    for host in (*hosts, "localhost", "127.0.0.1"):
        if host and host not in WILDCARD and host not in out:
            out.append(host)
    return out


def _san(names: list[str]) -> object:
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _load_or_make_ca(tls_dir: Path, now: dt.datetime) -> tuple[object, object, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = tls_dir / "ca.crt", tls_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())  # damaged: raises
        if cert.not_valid_after_utc - now > dt.timedelta(days=LEAF_DAYS + 1):
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            return cert, key, cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cruscible environments CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    (tls_dir / "server.crt").unlink(missing_ok=True)  # signed by the old CA
    log.info("issued a new environments CA, valid %d days", CA_DAYS)
    return cert, key, cert_path


def issue(tls_dir: Path, public_host: str, listen_host: str) -> tuple[Path, Path, Path]:
    """The CA and a leaf for ``public_host`` under ``tls_dir`` (made or renewed as needed).

    Returns ``(leaf cert, leaf key, CA cert)`` paths. Raises ``ProvisioningError`` when the
    directory cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    try:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisioningError(f"cannot create {tls_dir}: {exc}") from None
    now = dt.datetime.now(dt.UTC)
    try:
        ca_cert, ca_key, ca_path = _load_or_make_ca(tls_dir, now)
    except (ValueError, TypeError) as exc:
        raise ProvisioningError(
            f"the environments CA in {tls_dir} is damaged ({type(exc).__name__}); move "
            "ca.crt and ca.key away to issue a new one (bundles given so far name the old one)"
        ) from None
    cert_path, key_path = tls_dir / "server.crt", tls_dir / "server.key"
    names = _names(public_host, listen_host)
    if cert_path.exists() and key_path.exists():
        try:
            leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):  # damaged: issue a new one
            san = None
        if san == _san(names) and leaf.not_valid_after_utc - now > RENEW_BEFORE:
            return cert_path, key_path, ca_path
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)  # type: ignore[attr-defined]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(_san(names), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_key(key_path, key)
    _write_private(cert_path, leaf.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("issued a server certificate for %s, valid %d days", ", ".join(names), LEAF_DAYS)
    return cert_path, key_path, ca_path


def _check_pem(exposure: Exposure) -> None:
    """The operator's files load as a TLS server's would (a PEM certificate and the key that
    matches it; the CA as PEM), else ``ProvisioningError`` naming the file: checked once here
    rather than found by each server's relay as it starts."""
    try:
        exposure.server_context()
    except (OSError, ssl.SSLError) as exc:
        raise ProvisioningError(
            f"{ENV_TLS_CERT}={exposure.cert_file} and {ENV_TLS_KEY}={exposure.key_file} are not "
            f"a PEM certificate and its private key ({exc.__class__.__name__}: "
            f"{getattr(exc, 'reason', None) or exc})"
        ) from None
    if exposure.ca_file is not None:
        try:
            exposure.client_context()
        except (OSError, ssl.SSLError) as exc:
            raise ProvisioningError(
                f"{ENV_TLS_CA}={exposure.ca_file} is not a PEM certificate "
                f"({exc.__class__.__name__}: {getattr(exc, 'reason', None) or exc})"
            ) from None


def from_env(state_dir: Path, environ: Mapping[str, str] | None = None) -> Exposure | None:
    """The exposure the operator configured, or ``None`` (loopback, plain text: the default).

    Raises ``ProvisioningError`` for a public host clients could not name
    (:func:`check_public_host`), a listen address that is not an IP address, a half-given
    certificate, or files that are missing or do
    not load as PEM.
    """
    env = os.environ if environ is None else environ
    public = env.get(ENV_PUBLIC_HOST, "").strip()
    if not public:
        return None
    try:
        check_public_host(public)
    except ValueError as exc:
        raise ProvisioningError(f"{ENV_PUBLIC_HOST}: {exc}") from None
    try:
        listen = check_listen_host(env.get(ENV_LISTEN_HOST, ""))
    except ValueError as exc:
        raise ProvisioningError(f"{ENV_LISTEN_HOST}: {exc}") from None
    cert, key, ca = (env.get(n, "").strip() for n in (ENV_TLS_CERT, ENV_TLS_KEY, ENV_TLS_CA))
    if bool(cert) != bool(key):
        raise ProvisioningError(f"set both {ENV_TLS_CERT} and {ENV_TLS_KEY}, or neither")
    if cert:
        paths = [Path(cert), Path(key)] + ([Path(ca)] if ca else [])
        for path in paths:
            if not path.is_file():
                raise ProvisioningError(f"TLS file {path} does not exist")
        exposure = Exposure(public, listen, Path(cert), Path(key), Path(ca) if ca else None)
        _check_pem(exposure)
        return exposure
    leaf, leaf_key, ca_path = issue(state_dir / "tls", public, listen)
    return Exposure(public, listen, leaf, leaf_key, ca_path, issued=True)
