"""Credentials for virtual chunk containers, with Icechunk's names (``icechunk.credentials``).

A repository reads a virtual chunk only from a container the user authorized when opening
it: ``Repository.open(storage, authorize_virtual_chunk_access={url_prefix: credentials})``.
The credentials are plain, picklable values (they travel with sessions and forks to the
workers that read) and never part of the saved config; their ``repr`` hides secrets.

Build them with :func:`s3_credentials`, :func:`gcs_credentials` or the no-auth sentinels
:data:`LocalFileSystemAccess` (``file://``) and :data:`HttpAccess` (``http(s)://``), and
wrap a mapping with :func:`containers_credentials`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from icechunk_dist.errors import InvalidInputError

__all__ = [
    "AnyCredential",
    "AnyGcsCredential",
    "AnyS3Credential",
    "Credentials",
    "GcsCredentials",
    "HttpAccess",
    "LocalFileSystemAccess",
    "S3Credentials",
    "S3StaticCredentials",
    "containers_credentials",
    "gcs_anonymous_credentials",
    "gcs_credentials",
    "gcs_from_env_credentials",
    "gcs_static_credentials",
    "normalize_authorization",
    "s3_anonymous_credentials",
    "s3_credentials",
    "s3_from_env_credentials",
    "s3_refreshable_credentials",
    "s3_static_credentials",
]


@dataclass(frozen=True)
class S3StaticCredentials:
    """An S3 access key (Icechunk's ``S3StaticCredentials``)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_after: datetime | None = None


class S3Credentials:
    """The kinds of S3 credentials (Icechunk's ``S3Credentials``)."""

    @dataclass(frozen=True)
    class FromEnv:
        """Credentials from the environment (``AWS_*`` variables, profiles, instance role)."""

    @dataclass(frozen=True)
    class Anonymous:
        """Unsigned requests: public buckets."""

    @dataclass(frozen=True)
    class Static:
        """A fixed access key."""

        credentials: S3StaticCredentials

    @dataclass(frozen=True)
    class Refreshable:
        """Credentials from a function, called again when they expire. The function
        travels with sessions and forks, so it must pickle (a module-level function)."""

        get_credentials: Callable[[], S3StaticCredentials]
        current: S3StaticCredentials | None = field(default=None, repr=False)


AnyS3Credential = (S3Credentials.FromEnv | S3Credentials.Anonymous | S3Credentials.Static
                   | S3Credentials.Refreshable)


class GcsCredentials:
    """The kinds of Google Cloud Storage credentials (Icechunk's ``GcsCredentials``)."""

    @dataclass(frozen=True)
    class FromEnv:
        """Application default credentials from the environment."""

    @dataclass(frozen=True)
    class Anonymous:
        """Unsigned requests: public buckets."""

    @dataclass(frozen=True)
    class Static:
        """One of a service account file, a service account key (JSON text), an
        application credentials file or a bearer token."""

        service_account_file: str | None = None
        service_account_key: str | None = field(default=None, repr=False)
        application_credentials: str | None = None
        bearer_token: str | None = field(default=None, repr=False)


AnyGcsCredential = GcsCredentials.FromEnv | GcsCredentials.Anonymous | GcsCredentials.Static


class Credentials:
    """Credentials of one virtual chunk container (Icechunk's ``Credentials``): the values
    of ``authorize_virtual_chunk_access``."""

    @dataclass(frozen=True)
    class S3:
        credentials: AnyS3Credential

    @dataclass(frozen=True)
    class Gcs:
        credentials: AnyGcsCredential

    @dataclass(frozen=True)
    class LocalFileSystemAccess:
        """Authorizes a local-filesystem (``file://``) container: no credentials needed."""

    @dataclass(frozen=True)
    class HttpAccess:
        """Authorizes an HTTP(S) container: no credentials needed."""


AnyCredential = (Credentials.S3 | Credentials.Gcs | Credentials.LocalFileSystemAccess
                 | Credentials.HttpAccess)

#: Sentinel authorizing a ``file://`` container (no credentials).
LocalFileSystemAccess = Credentials.LocalFileSystemAccess()
#: Sentinel authorizing an ``http(s)://`` container (no credentials).
HttpAccess = Credentials.HttpAccess()


# -------------------------------------------------------------------------------- S3
def s3_static_credentials(*, access_key_id: str, secret_access_key: str,
                          session_token: str | None = None,
                          expires_after: datetime | None = None) -> S3Credentials.Static:
    """A fixed S3 access key."""
    return S3Credentials.Static(S3StaticCredentials(access_key_id, secret_access_key,
                                                    session_token, expires_after))


def s3_anonymous_credentials() -> S3Credentials.Anonymous:
    """Unsigned S3 requests (public buckets)."""
    return S3Credentials.Anonymous()


def s3_from_env_credentials() -> S3Credentials.FromEnv:
    """S3 credentials from the environment."""
    return S3Credentials.FromEnv()


def s3_refreshable_credentials(get_credentials: Callable[[], S3StaticCredentials],
                               scatter_initial_credentials: bool = False
                               ) -> S3Credentials.Refreshable:
    """S3 credentials from ``get_credentials``, called again when they expire.

    ``scatter_initial_credentials``: call it once now, so that pickled copies (sessions and
    forks sent to workers) start with these credentials instead of each calling it.
    """
    current = get_credentials() if scatter_initial_credentials else None
    return S3Credentials.Refreshable(get_credentials, current)


def s3_credentials(*, access_key_id: str | None = None, secret_access_key: str | None = None,
                   session_token: str | None = None, expires_after: datetime | None = None,
                   anonymous: bool | None = None, from_env: bool | None = None,
                   get_credentials: Callable[[], S3StaticCredentials] | None = None,
                   scatter_initial_credentials: bool = False) -> AnyS3Credential:
    """S3 credentials from keyword arguments, as Icechunk's ``s3_credentials``: nothing
    given means from the environment.

    Raises
    ------
    InvalidInputError
        On a combination of arguments that names more than one kind.
    """
    key_given = any(v is not None for v in (access_key_id, secret_access_key, session_token,
                                            expires_after))
    if not key_given and not anonymous and get_credentials is None and (
            from_env is None or from_env):
        return s3_from_env_credentials()
    if anonymous and not key_given and not from_env and get_credentials is None:
        return s3_anonymous_credentials()
    if get_credentials is not None and not key_given and not from_env and not anonymous:
        return s3_refreshable_credentials(get_credentials, scatter_initial_credentials)
    if (access_key_id and secret_access_key and not from_env and not anonymous
            and get_credentials is None):
        return s3_static_credentials(access_key_id=access_key_id,
                                     secret_access_key=secret_access_key,
                                     session_token=session_token,
                                     expires_after=expires_after)
    raise InvalidInputError("conflicting arguments to s3_credentials")


# -------------------------------------------------------------------------------- GCS
def gcs_static_credentials(*, service_account_file: str | None = None,
                           service_account_key: str | None = None,
                           application_credentials: str | None = None,
                           bearer_token: str | None = None) -> GcsCredentials.Static:
    """One explicit Google credential.

    Raises
    ------
    InvalidInputError
        Unless exactly one is given.
    """
    given = [v for v in (service_account_file, service_account_key, application_credentials,
                         bearer_token) if v is not None]
    if len(given) != 1:
        raise InvalidInputError("gcs_static_credentials takes exactly one credential")
    return GcsCredentials.Static(service_account_file, service_account_key,
                                 application_credentials, bearer_token)


def gcs_anonymous_credentials() -> GcsCredentials.Anonymous:
    """Unsigned GCS requests (public buckets)."""
    return GcsCredentials.Anonymous()


def gcs_from_env_credentials() -> GcsCredentials.FromEnv:
    """GCS credentials from the environment."""
    return GcsCredentials.FromEnv()


def gcs_credentials(*, service_account_file: str | None = None,
                    service_account_key: str | None = None,
                    application_credentials: str | None = None,
                    bearer_token: str | None = None, from_env: bool | None = None,
                    anonymous: bool | None = None) -> AnyGcsCredential:
    """GCS credentials from keyword arguments, as Icechunk's ``gcs_credentials``: nothing
    given means from the environment.

    Raises
    ------
    InvalidInputError
        On conflicting arguments.
    """
    static = any(v is not None for v in (service_account_file, service_account_key,
                                         application_credentials, bearer_token))
    if anonymous and not static and not from_env:
        return gcs_anonymous_credentials()
    if static and not anonymous and not from_env:
        return gcs_static_credentials(service_account_file=service_account_file,
                                      service_account_key=service_account_key,
                                      application_credentials=application_credentials,
                                      bearer_token=bearer_token)
    if not static and not anonymous:
        return gcs_from_env_credentials()
    raise InvalidInputError("conflicting arguments to gcs_credentials")


# -------------------------------------------------------------------------------- mapping
def _wrap(prefix: str, cred: Any) -> AnyCredential | None:
    if cred is None or isinstance(cred, (Credentials.S3, Credentials.Gcs,
                                         Credentials.LocalFileSystemAccess,
                                         Credentials.HttpAccess)):
        return cred  # type: ignore[no-any-return]
    if isinstance(cred, (S3Credentials.FromEnv, S3Credentials.Anonymous, S3Credentials.Static,
                         S3Credentials.Refreshable)):
        return Credentials.S3(cred)
    if isinstance(cred, (GcsCredentials.FromEnv, GcsCredentials.Anonymous,
                         GcsCredentials.Static)):
        return Credentials.Gcs(cred)
    raise InvalidInputError(
        f"credentials for virtual chunk container {prefix!r} must come from s3_credentials, "
        "gcs_credentials, LocalFileSystemAccess or HttpAccess (or be None), got "
        f"{type(cred).__name__}")


def containers_credentials(m: Mapping[str, Any]) -> dict[str, AnyCredential | None]:
    """Credentials per container url prefix, for ``authorize_virtual_chunk_access``.

    Values are S3 or GCS credentials, :data:`LocalFileSystemAccess`, :data:`HttpAccess`, or
    None (the store's defaults: the environment for S3 and GCS).

    Raises
    ------
    InvalidInputError
        On a key that is not a string or a value of another type.
    """
    out: dict[str, AnyCredential | None] = {}
    for prefix, cred in m.items():
        if not isinstance(prefix, str):
            raise InvalidInputError(f"container url prefixes are strings, got {prefix!r}")
        out[prefix] = _wrap(prefix, cred)
    return out


def normalize_authorization(m: Mapping[str, Any] | None) -> dict[str, AnyCredential | None]:
    """``authorize_virtual_chunk_access`` as given (None: nothing authorized), checked and
    with bare S3/GCS credentials wrapped as :func:`containers_credentials` does.

    Raises
    ------
    InvalidInputError
        If it is not a mapping, or as :func:`containers_credentials`.
    """
    if m is None:
        return {}
    if not isinstance(m, Mapping):
        raise InvalidInputError("authorize_virtual_chunk_access must be a mapping of "
                                f"url prefix to credentials, got {type(m).__name__}")
    return containers_credentials(m)
