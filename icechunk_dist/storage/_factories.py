"""The public ``<backend>_storage`` factories. They only record a spec: no I/O, no client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping

from icechunk_dist._containers import S3Options
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.storage._base import Storage
from icechunk_dist.storage._obstore import ObstoreStorage
from icechunk_dist.storage._spec import StorageSpec, make_store

__all__ = [
    "azure_storage",
    "gcs_storage",
    "in_memory_storage",
    "local_filesystem_storage",
    "s3_object_store_storage",
    "s3_storage",
]


def _name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise InvalidInputError(f"{what} must be a non-empty name without '/', got {value!r}")
    return value


def _prefix(prefix: str | None) -> str:
    if prefix is None:  # Icechunk's spelling of the bucket root
        return ""
    if not isinstance(prefix, str):
        raise InvalidInputError(f"prefix must be a str, got {type(prefix).__name__}")
    clean = prefix.strip("/")
    if any(s in ("", ".", "..") for s in clean.split("/")) and clean:
        raise InvalidInputError(f"prefix {prefix!r} has an empty, '.' or '..' segment")
    return clean


def _options(**values: object) -> tuple[tuple[str, object], ...]:
    return tuple(sorted((k, v) for k, v in values.items() if v is not None))


def _secrets(**values: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in values.items() if v is not None))


def local_filesystem_storage(path: str | os.PathLike[str]) -> Storage:
    """Storage in a directory of the local filesystem (created on first use).

    Create-if-absent is atomic (hard link of a fully written temporary file), so several
    processes on one machine (or on a POSIX shared filesystem) may write one repository.

    Parameters
    ----------
    path
        The repository directory; made absolute now, so a pickled storage does not depend
        on the working directory of the process that unpickles it.

    Raises
    ------
    InvalidInputError
        If ``path`` is empty.
    """
    text = os.fspath(path)
    if not text:
        raise InvalidInputError("local_filesystem_storage needs a non-empty path")
    return ObstoreStorage(
        StorageSpec("local", _options(path=os.path.abspath(os.path.expanduser(text))))
    )


def in_memory_storage() -> Storage:
    """Storage held in this process's memory: for tests and experiments.

    Every call makes a new, empty store; it cannot be pickled to another process.
    """
    return ObstoreStorage(StorageSpec("memory", token=uuid.uuid4().hex))


def s3_storage(
    *,
    bucket: str,
    prefix: str | None,
    region: str | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    force_path_style: bool = False,
    requester_pays: bool = False,
) -> Storage:
    """Storage under ``prefix`` of an S3 (or S3-compatible) bucket.

    Create-if-absent uses ``If-None-Match: *``, which AWS S3 and most S3-compatible servers
    honor. The keywords are Icechunk's (a subset: see docs/api.md).

    Parameters
    ----------
    bucket, prefix
        Where the repository lives; a ``None`` or empty prefix is the bucket root.
    region
        The bucket's region (``us-east-1`` when neither given nor taken from the environment).
    endpoint_url
        An S3-compatible server (``http://127.0.0.1:9000``); requests to it are path-style.
    allow_http
        Permit plain-HTTP endpoints.
    access_key_id, secret_access_key, session_token
        Explicit credentials; they travel with a pickled storage.
    anonymous
        Send unsigned requests (public buckets). Also what happens when neither keys nor
        ``from_env`` are given.
    from_env
        Let obstore read ``AWS_*`` variables and instance credentials. Without it and without
        keys, requests are anonymous and nothing is read from the environment.
    force_path_style
        Address the bucket path-style (``<endpoint>/<bucket>/<key>``) instead of
        virtual-hosted style: honoured on AWS; requests to an ``endpoint_url`` are
        path-style either way.
    requester_pays
        Send ``x-amz-request-payer: requester`` with every request.

    Raises
    ------
    InvalidInputError
        If the bucket is malformed, only one of the access key pair is given, or
        ``anonymous`` is combined with keys or ``from_env``.
    """
    if (access_key_id is None) != (secret_access_key is None):
        raise InvalidInputError("give both access_key_id and secret_access_key, or neither")
    if anonymous and (access_key_id is not None or from_env):
        raise InvalidInputError("anonymous=True cannot be combined with access keys or "
                                "from_env=True")
    options = S3Options(region=region, endpoint_url=endpoint_url, allow_http=allow_http,
                        anonymous=bool(anonymous), force_path_style=force_path_style,
                        requester_pays=requester_pays)
    return _s3_from_options(
        bucket, prefix, options, access_key_id=access_key_id,
        secret_access_key=secret_access_key, session_token=session_token,
        from_env=bool(from_env))


def s3_object_store_storage(
    *,
    bucket: str,
    prefix: str | None,
    region: str | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    force_path_style: bool = False,
) -> Storage:
    """Icechunk's S3 storage through the ``object_store`` crate rather than the AWS SDK:
    here every S3 storage goes through obstore (``object_store``), so this is
    :func:`s3_storage` with Icechunk's narrower set of keywords.

    Raises
    ------
    InvalidInputError
        As :func:`s3_storage`.
    """
    return s3_storage(
        bucket=bucket, prefix=prefix, region=region, endpoint_url=endpoint_url,
        allow_http=allow_http, access_key_id=access_key_id,
        secret_access_key=secret_access_key, session_token=session_token,
        anonymous=anonymous, from_env=from_env, force_path_style=force_path_style)


def _s3_from_options(bucket: str, prefix: str | None, options: S3Options, *,
                     access_key_id: str | None, secret_access_key: str | None,
                     session_token: str | None, from_env: bool) -> Storage:
    """The storage of ``bucket``/``prefix`` reached as ``options`` say."""
    spec = StorageSpec(
        "s3",
        _options(
            bucket=_name("bucket", bucket),
            prefix=_prefix(prefix),
            region=options.region,
            endpoint_url=options.endpoint_url,
            allow_http=options.allow_http,
            # only the settings that change requests are recorded, so that a spec written
            # before they existed compares equal to one that leaves them at their defaults
            anonymous=options.anonymous or None,
            force_path_style=options.force_path_style or None,
            requester_pays=options.requester_pays or None,
        ),
        _secrets(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
        ),
        from_env=from_env,
    )
    return ObstoreStorage(spec)


def _config(config: Mapping[str, str | bool] | None) -> dict[str, str]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvalidInputError(
            f"config must be a mapping of str to str, got {type(config).__name__}"
        )
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"config keys must be non-empty str, got {key!r}")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str):
            raise InvalidInputError(f"config value of {key!r} must be a str, got {value!r}")
        out[key] = value
    return out


def _checked(spec: StorageSpec) -> Storage:
    """Fail now, not at first use, on a ``config`` key that obstore does not know.

    Only the pass-through options are tried (credentials are not parsed or fetched); building
    an obstore client does no I/O.
    """
    extra = tuple((k, v) for k, v in spec.secrets if k.startswith("config:"))
    if extra:
        where = tuple((k, v) for k, v in spec.options if k in ("account", "bucket", "container"))
        try:
            make_store(StorageSpec(spec.backend, where, extra))
        except Exception as exc:  # obstore's error for an unknown or malformed option
            raise InvalidInputError(
                f"bad {spec.backend} storage config: {str(exc).splitlines()[0]}"
            ) from exc
    return ObstoreStorage(spec)


def gcs_storage(
    *,
    bucket: str,
    prefix: str,
    service_account_file: str | None = None,
    service_account_key: str | None = None,
    application_credentials: str | None = None,
    bearer_token: str | None = None,
    anonymous: bool = False,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    from_env: bool = False,
    config: Mapping[str, str | bool] | None = None,
) -> Storage:
    """Storage under ``prefix`` of a Google Cloud Storage bucket.

    Create-if-absent uses a generation precondition (``x-goog-if-generation-match: 0``) on the
    GCS XML API, which GCS honors. The ``fake-gcs-server`` emulator does not implement XML API
    uploads, so obstore cannot write to it (reads, listings and deletes work):
    :meth:`Repository.create <icechunk_dist.Repository.create>` then fails with a clear
    :class:`~icechunk_dist.StorageError` (see ``docs/storage.md``).

    Parameters
    ----------
    bucket, prefix
        Where the repository lives.
    service_account_file, service_account_key, application_credentials
        A service account JSON file path, its JSON text, or an application-credentials file.
    bearer_token
        A static OAuth bearer token.
    anonymous
        Send unsigned requests (public buckets, emulators). Also the default when neither
        credentials nor ``from_env`` are given.
    endpoint_url, allow_http
        A GCS-compatible server (``http://127.0.0.1:4443``) instead of Google's, and whether
        plain HTTP is permitted.
    from_env
        Let obstore read ``GOOGLE_*`` variables; without it and without credentials requests
        are anonymous. (obstore's GCS client reads ``GOOGLE_*`` variables even so; every
        explicit argument takes precedence over them.)
    config
        Further obstore ``GCSConfig`` options by name (``{"skip_signature": "true"}``); they
        are kept with the secrets (never shown).

    Raises
    ------
    InvalidInputError
        If the bucket is malformed, an option is unknown, or ``anonymous`` is combined with
        credentials.
    """
    if anonymous and (service_account_file or service_account_key or application_credentials
                      or bearer_token):
        raise InvalidInputError("anonymous=True cannot be combined with GCS credentials")
    spec = StorageSpec(
        "gcs",
        _options(
            bucket=_name("bucket", bucket),
            prefix=_prefix(prefix),
            service_account_file=service_account_file,
            application_credentials=application_credentials,
            endpoint_url=endpoint_url,
            allow_http=bool(allow_http) or None,
            anonymous=bool(anonymous) or None,
        ),
        _secrets(
            service_account_key=service_account_key,
            bearer_token=bearer_token,
            **{f"config:{k}": v for k, v in _config(config).items()},
        ),
        from_env=bool(from_env),
    )
    return _checked(spec)


def azure_storage(
    *,
    account: str,
    container: str,
    prefix: str,
    access_key: str | None = None,
    sas_token: str | None = None,
    bearer_token: str | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    from_env: bool = False,
    config: Mapping[str, str | bool] | None = None,
) -> Storage:
    """Storage under ``prefix`` of an Azure Blob Storage container.

    Create-if-absent uses ``If-None-Match: *``, which Azure Blob Storage and the Azurite
    emulator honor (tested against Azurite: ``tests/storage/test_cloud_emulators.py``).

    Parameters
    ----------
    account, container, prefix
        Where the repository lives.
    access_key, sas_token, bearer_token
        A storage account key, a (percent-encoded) shared access signature, or a static
        OAuth bearer token.
    endpoint_url, allow_http
        A blob endpoint other than ``https://<account>.blob.core.windows.net``, e.g. Azurite's
        ``http://127.0.0.1:10000/devstoreaccount1``, and whether plain HTTP is permitted.
    from_env
        Let obstore read ``AZURE_*`` variables; without it and without credentials requests
        are anonymous. (obstore's Azure client reads ``AZURE_*`` variables even so; every
        explicit argument takes precedence over them.)
    config
        Further obstore ``AzureConfig`` options by name (``{"use_emulator": "true"}``); they
        are kept with the secrets (never shown).

    Raises
    ------
    InvalidInputError
        If the account or container is malformed or an option is unknown.
    """
    spec = StorageSpec(
        "azure",
        _options(
            account=_name("account", account),
            container=_name("container", container),
            prefix=_prefix(prefix),
            endpoint_url=endpoint_url,
            allow_http=bool(allow_http) or None,
        ),
        _secrets(
            access_key=access_key,
            sas_token=sas_token,
            bearer_token=bearer_token,
            **{f"config:{k}": v for k, v in _config(config).items()},
        ),
        from_env=bool(from_env),
    )
    return _checked(spec)
