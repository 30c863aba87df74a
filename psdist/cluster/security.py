"""TLS for the Dask cluster psdist trains on: thin helpers around ``distributed.Security``.

Dask encrypts and authenticates every connection (client, scheduler, workers — so every pull and
push of the parameter server) when the cluster runs on the ``tls://`` protocol with a
:class:`distributed.security.Security` object. psdist adds only what makes that easy and its
mistakes clear:

- :func:`temporary_security` — a fresh self-signed certificate held in memory, for a cluster
  started on this machine (``embedded_cluster(..., security=True)``); needs ``cryptography``.
- :func:`security_from_files` — certificate files (a batch system: the jobs read the same
  files), checked before any cluster starts: each path exists, is readable, holds PEM of the
  right kind, and the key belongs to the certificate.
- :func:`as_security` — what ``embedded_cluster(security=...)`` and a batch config's
  ``security:`` accept: ``None``/``False``, ``True``, a ``Security``, or a mapping of file names.
- :func:`write_temporary_certificate` — a self-signed certificate written to files (tests, one
  user on one site), for when files are needed rather than memory.

See ``docs/security.md`` for what is protected and what is not (the dashboard's HTTP).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distributed.security import Security

from psdist.errors import ClusterError, ConfigError

__all__ = [
    "SECURITY_KEYS",
    "as_security",
    "security_from_files",
    "temporary_security",
    "write_temporary_certificate",
]

#: The keys of a ``security:`` mapping in a batch config (``key`` may be left out when the
#: certificate file holds the private key too).
SECURITY_KEYS = ("ca_file", "cert", "key")

_INSTALL = "pip install cryptography (or pip install 'psdist[tls]')"


def temporary_security() -> Security:
    """A self-signed certificate and key, in memory, valid for every role of one cluster.

    The same as ``distributed.Security.temporary()`` (which it calls), with encryption required,
    and a clear error when the ``cryptography`` package it needs is missing.

    Returns
    -------
    distributed.security.Security
        Give it to ``LocalCluster(security=..., protocol="tls://")`` (what
        ``embedded_cluster(security=True)`` does); a client connects with the same object.

    Raises
    ------
    ClusterError
        ``cryptography`` is not installed.
    """
    try:
        import cryptography  # noqa: F401
    except ImportError as e:
        raise ClusterError(
            f"a temporary TLS certificate needs the 'cryptography' package, which is not installed: {_INSTALL}; "
            "or give certificate files instead (psdist.cluster.security.security_from_files)"
        ) from e
    sec: Security = Security.temporary()  # unannotated in distributed: Any
    return sec


def _readable_pem(path: str | os.PathLike[str], what: str, marker: str) -> str:
    """``path`` expanded and made absolute, after checking it is a readable PEM file with ``marker``."""
    p = Path(os.path.expandvars(os.fspath(path))).expanduser()
    p = p.absolute()
    if not p.exists():
        raise ConfigError(
            f"TLS {what} file {str(p)!r} does not exist; give the path of a PEM file "
            "(see docs/security.md for making one with openssl)"
        )
    if not p.is_file():
        raise ConfigError(f"TLS {what} path {str(p)!r} is not a file; give the path of a PEM file")
    try:
        text = p.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(
            f"TLS {what} file {str(p)!r} cannot be read ({e.strerror}); make it readable by this user "
            f"(chmod u+r {p}) and by the batch jobs"
        ) from e
    if f"-----BEGIN {marker}" not in text and not (marker == "PRIVATE KEY" and "PRIVATE KEY-----" in text):
        raise ConfigError(
            f"TLS {what} file {str(p)!r} holds no PEM '{marker}' block; "
            f"expected a file starting with '-----BEGIN {marker}-----'"
        )
    return str(p)


def security_from_files(
    ca_file: str | os.PathLike[str],
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
    *,
    require_encryption: bool = True,
) -> Security:
    """A ``Security`` from certificate files, the same files for client, scheduler and workers.

    Every file is checked now, on this machine, so a typo fails before any job is queued. The
    paths are made absolute (``~`` and ``$VARS`` expanded): dask-jobqueue writes them into the job
    scripts as ``--tls-ca-file`` etc., so they must name files that the compute nodes can read
    too (a shared file system, e.g. your home directory).

    Parameters
    ----------
    ca_file
        PEM file of the certificate authority (or the self-signed certificate itself) that every
        peer's certificate must be signed by.
    cert
        PEM certificate of this cluster's peers.
    key
        PEM private key of ``cert``; ``None`` when ``cert`` holds the key too.
    require_encryption
        Refuse unencrypted connections (``tcp://``); the default.

    Returns
    -------
    distributed.security.Security

    Raises
    ------
    ConfigError
        A file is missing, not readable, not PEM of the right kind, or the key does not belong
        to the certificate; the message names the path and the fix.
    """
    ca = _readable_pem(ca_file, "CA (ca_file)", "CERTIFICATE")
    crt = _readable_pem(cert, "certificate (cert)", "CERTIFICATE")
    k = _readable_pem(key, "private key (key)", "PRIVATE KEY") if key is not None else None
    if k is None and "PRIVATE KEY-----" not in Path(crt).read_text(errors="replace"):
        raise ConfigError(
            f"TLS certificate file {crt!r} holds no private key and no key file was given; "
            "give key=<path of the PEM private key> (key: in a batch config)"
        )
    try:
        ssl.create_default_context(cafile=ca)
    except ssl.SSLError as e:
        raise ConfigError(f"TLS CA file {ca!r} is not a usable certificate ({e.reason or e})") from e
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(crt, k)
    except ssl.SSLError as e:
        raise ConfigError(
            f"TLS certificate {crt!r} and key {k or crt!r} do not go together ({e.reason or e}); "
            "give the private key that was made with this certificate"
        ) from e
    return Security(
        require_encryption=require_encryption,
        tls_ca_file=ca,
        tls_client_cert=crt,
        tls_client_key=k,
        tls_scheduler_cert=crt,
        tls_scheduler_key=k,
        tls_worker_cert=crt,
        tls_worker_key=k,
    )


def as_security(value: Any) -> Security | None:
    """Turn what psdist accepts as ``security`` into a ``Security`` (or ``None``: no TLS).

    Parameters
    ----------
    value
        ``None`` or ``False``: no TLS. ``True``: :func:`temporary_security`. A ``Security``: used
        as it is. A mapping with ``ca_file``, ``cert`` and optionally ``key``:
        :func:`security_from_files`.

    Returns
    -------
    distributed.security.Security or None

    Raises
    ------
    ConfigError
        Anything else, or a mapping with unknown or missing keys.
    """
    if value is None or value is False:
        return None
    if value is True:
        return temporary_security()
    if isinstance(value, Security):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - set(SECURITY_KEYS)
        missing = {"ca_file", "cert"} - set(value)
        if unknown or missing:
            raise ConfigError(
                f"security: {dict(value)!r} must map ca_file, cert and (unless cert holds it) key to "
                f"PEM files; {'unknown ' + str(sorted(unknown)) if unknown else 'missing ' + str(sorted(missing))}"
            )
        return security_from_files(value["ca_file"], value["cert"], value.get("key"))
    raise ConfigError(
        f"security={value!r} is not understood; give True (a temporary certificate), a "
        "distributed.Security, or {'ca_file': ..., 'cert': ..., 'key': ...} (PEM files)"
    )


def write_temporary_certificate(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Write a new self-signed certificate and its key into ``directory`` (made if needed).

    For tests and for one user on one site: the certificate is its own CA, so anyone holding the
    two files is a member of the cluster. Keep them private (the key is written mode 0600).

    Returns
    -------
    dict
        ``{"ca_file": ..., "cert": ..., "key": ...}`` (absolute paths; ``ca_file`` is ``cert``),
        ready for :func:`security_from_files` or a batch config's ``security:``.

    Raises
    ------
    ClusterError
        ``cryptography`` is not installed.
    """
    sec = temporary_security()
    d = Path(directory).expanduser().absolute()
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "psdist-cert.pem", d / "psdist-key.pem"
    # distributed's Security lists its fields in __slots__ without annotations: mypy cannot see them
    cert.write_text(sec.tls_client_cert)  # type: ignore[attr-defined]
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(sec.tls_client_key)  # type: ignore[attr-defined]
    os.chmod(key, 0o600)  # also when the file was there before
    return {"ca_file": str(cert), "cert": str(cert), "key": str(key)}
