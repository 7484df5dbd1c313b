"""The public ``<backend>_storage`` factories. They only record a spec: no I/O, no client."""

from __future__ import annotations

import os
import uuid

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.storage._base import Storage
from icechunk_dist.storage._obstore import ObstoreStorage
from icechunk_dist.storage._spec import StorageSpec

__all__ = [
    "azure_storage",
    "gcs_storage",
    "in_memory_storage",
    "local_filesystem_storage",
    "s3_storage",
]


def _name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise InvalidInputError(f"{what} must be a non-empty name without '/', got {value!r}")
    return value


def _prefix(prefix: str) -> str:
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
    prefix: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    from_env: bool = False,
) -> Storage:
    """Storage under ``prefix`` of an S3 (or S3-compatible) bucket.

    Create-if-absent uses ``If-None-Match: *``, which AWS S3 and most S3-compatible servers honor.

    Parameters
    ----------
    bucket, prefix
        Where the repository lives.
    region
        The bucket's region (``us-east-1`` when neither given nor taken from the environment).
    endpoint_url
        An S3-compatible server (``http://127.0.0.1:9000``); requests then use path style.
    allow_http
        Permit plain-HTTP endpoints.
    access_key_id, secret_access_key, session_token
        Explicit credentials; they travel with a pickled storage.
    from_env
        Let obstore read ``AWS_*`` variables and instance credentials. Without it and without
        keys, requests are anonymous and nothing is read from the environment.

    Raises
    ------
    InvalidInputError
        If the bucket is malformed or only one of the access key pair is given.
    """
    if (access_key_id is None) != (secret_access_key is None):
        raise InvalidInputError("give both access_key_id and secret_access_key, or neither")
    spec = StorageSpec(
        "s3",
        _options(
            bucket=_name("bucket", bucket),
            prefix=_prefix(prefix),
            region=region,
            endpoint_url=endpoint_url,
            allow_http=bool(allow_http),
        ),
        _secrets(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
        ),
        from_env=bool(from_env),
    )
    return ObstoreStorage(spec)


def gcs_storage(
    *,
    bucket: str,
    prefix: str,
    service_account_file: str | None = None,
    service_account_key: str | None = None,
    application_credentials: str | None = None,
    from_env: bool = False,
) -> Storage:
    """Storage under ``prefix`` of a Google Cloud Storage bucket.

    Parameters
    ----------
    bucket, prefix
        Where the repository lives.
    service_account_file, service_account_key, application_credentials
        A service account JSON file path, its JSON text, or an application-credentials file.
    from_env
        Let obstore read ``GOOGLE_*`` variables; without it and without credentials requests
        are anonymous.

    Raises
    ------
    InvalidInputError
        If the bucket is malformed.
    """
    spec = StorageSpec(
        "gcs",
        _options(
            bucket=_name("bucket", bucket),
            prefix=_prefix(prefix),
            service_account_file=service_account_file,
            application_credentials=application_credentials,
        ),
        _secrets(service_account_key=service_account_key),
        from_env=bool(from_env),
    )
    return ObstoreStorage(spec)


def azure_storage(
    *,
    account: str,
    container: str,
    prefix: str,
    access_key: str | None = None,
    sas_token: str | None = None,
    from_env: bool = False,
) -> Storage:
    """Storage under ``prefix`` of an Azure Blob Storage container.

    Parameters
    ----------
    account, container, prefix
        Where the repository lives.
    access_key, sas_token
        A storage account key or a (percent-encoded) shared access signature.
    from_env
        Let obstore read ``AZURE_*`` variables; without it and without credentials requests
        are anonymous.

    Raises
    ------
    InvalidInputError
        If the account or container is malformed.
    """
    spec = StorageSpec(
        "azure",
        _options(
            account=_name("account", account),
            container=_name("container", container),
            prefix=_prefix(prefix),
        ),
        _secrets(access_key=access_key, sas_token=sas_token),
        from_env=bool(from_env),
    )
    return ObstoreStorage(spec)
