"""What a storage connects to (:class:`StorageSpec`), and how it becomes an obstore client.

A spec is plain data: it pickles, compares and hashes; credentials are kept out of ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

from icechunk_dist.errors import InvalidInputError, StorageError
from icechunk_dist.storage._local import check_root
from icechunk_dist.storage._retry import OBSTORE_RETRY_CONFIG

if TYPE_CHECKING:
    from obstore.store import ObjectStore, S3Credential

__all__ = ["StorageSpec", "make_store"]


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Everything needed to reconnect: backend, public options, secrets (never shown).

    Attributes
    ----------
    backend
        ``"local"``, ``"memory"``, ``"s3"``, ``"gcs"`` or ``"azure"``.
    options
        Sorted ``(name, value)`` pairs that are safe to show (bucket, prefix, region...).
    secrets
        Sorted ``(name, value)`` pairs of credentials as given; excluded from ``repr``.
    from_env
        Whether the backend may read configuration and credentials from the environment.
    token
        Identity of an in-memory store (two in-memory storages are two repositories).
    """

    backend: str
    options: tuple[tuple[str, Any], ...] = ()
    secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    from_env: bool = False
    token: str | None = None

    def option(self, name: str) -> Any:
        """The public option ``name``, or None."""
        return dict(self.options).get(name)

    def secret(self, name: str) -> str | None:
        """The secret ``name``, or None."""
        return dict(self.secrets).get(name)


class _StaticS3Credentials:
    """Credentials given explicitly; a provider (not kwargs) so that AWS_* env never mixes in."""

    __slots__ = ("_cred",)

    def __init__(self, key_id: str, secret: str, token: str | None) -> None:
        self._cred: S3Credential = {
            "access_key_id": key_id,
            "secret_access_key": secret,
            "token": token,
            "expires_at": None,
        }

    def __call__(self) -> S3Credential:
        return self._cred

    def __repr__(self) -> str:
        return "_StaticS3Credentials(<redacted>)"


def _s3_store(spec: StorageSpec) -> S3Store:
    bucket = spec.option("bucket")
    region = spec.option("region")
    endpoint = spec.option("endpoint_url")
    allow_http = bool(spec.option("allow_http"))
    key_id, secret = spec.secret("access_key_id"), spec.secret("secret_access_key")
    token = spec.secret("session_token")
    path_style = bool(spec.option("force_path_style"))
    kw: dict[str, Any] = {}
    if spec.option("requester_pays"):
        kw["request_payer"] = True
    if spec.from_env:
        # obstore reads AWS_* itself; we only add what was given explicitly
        if region:
            kw["region"] = region
        if endpoint:
            kw.update(endpoint=endpoint, virtual_hosted_style_request=False)
        elif path_style:
            kw["virtual_hosted_style_request"] = False
        if key_id and secret:
            kw.update(access_key_id=key_id, secret_access_key=secret)
            if token:
                kw["token"] = token
        client: dict[str, Any] = {"allow_http": True} if allow_http else {}
    else:
        # obstore always starts from AWS_* env: pin every setting that matters so none leaks in
        region = region or "us-east-1"
        kw.update(region=region, conditional_put="etag")
        if endpoint:  # S3-compatible servers (MinIO, moto, ...) want path-style requests
            kw.update(endpoint=endpoint, virtual_hosted_style_request=False)
        elif path_style:  # Icechunk's force_path_style=True on AWS
            kw.update(endpoint=f"https://s3.{region}.amazonaws.com",
                      virtual_hosted_style_request=False)
        else:
            kw.update(
                endpoint=f"https://{bucket}.s3.{region}.amazonaws.com",
                virtual_hosted_style_request=True,
            )
        if key_id and secret and not spec.option("anonymous"):
            kw.update(
                credential_provider=_StaticS3Credentials(key_id, secret, token),
                skip_signature=False,
            )
        else:  # anonymous: public buckets
            kw.update(skip_signature=True, access_key_id="", secret_access_key="")
        # allow_http as a top-level kwarg breaks S3Store pickling; pass it as a client option
        client = {"allow_http": allow_http}
    return S3Store(
        bucket,
        prefix=spec.option("prefix") or None,
        client_options=client or None,  # type: ignore[arg-type]
        retry_config=OBSTORE_RETRY_CONFIG,  # retries are ours alone: _retry.py
        **kw,
    )


def _extra_config(spec: StorageSpec) -> dict[str, str]:
    """The ``config={...}`` pass-through options, kept among the secrets as ``config:<key>``."""
    return {k.partition(":")[2]: v for k, v in spec.secrets if k.startswith("config:")}


# words in obstore config keys (with or without their azure_/google_ prefixes) that bring
# credentials of their own, or decide signing: then we do not add skip_signature
_CREDENTIAL_WORDS = ("key", "token", "secret", "client_id", "emulator", "cli", "msi",
                     "signature", "federated", "credential", "service_account")


def _config_has_credentials(config: dict[str, str]) -> bool:
    return any(word in k.lower() for k in config for word in _CREDENTIAL_WORDS)


def _client_options(spec: StorageSpec) -> dict[str, Any] | None:
    return {"allow_http": True} if spec.option("allow_http") else None


def _gcs_store(spec: StorageSpec) -> GCSStore:
    kw: dict[str, Any] = {}
    if spec.option("service_account_file"):
        kw["service_account"] = spec.option("service_account_file")
    if spec.option("application_credentials"):
        kw["application_credentials"] = spec.option("application_credentials")
    if spec.secret("service_account_key"):
        kw["service_account_key"] = spec.secret("service_account_key")
    if spec.secret("bearer_token"):
        kw["bearer_token"] = spec.secret("bearer_token")
    extra = _extra_config(spec)
    if spec.option("anonymous") or (
        not kw and not spec.from_env and not _config_has_credentials(extra)
    ):
        kw["skip_signature"] = True
    if spec.option("endpoint_url"):
        kw["base_url"] = spec.option("endpoint_url")
    return GCSStore(
        spec.option("bucket"),
        prefix=spec.option("prefix") or None,
        config=extra or None,  # type: ignore[arg-type]
        client_options=_client_options(spec),  # type: ignore[arg-type]
        retry_config=OBSTORE_RETRY_CONFIG,  # retries are ours alone: _retry.py
        **kw,
    )


def _azure_store(spec: StorageSpec) -> AzureStore:
    kw: dict[str, Any] = {"account_name": spec.option("account")}
    if spec.secret("access_key"):
        kw["account_key"] = spec.secret("access_key")
    if spec.secret("sas_token"):
        kw["sas_key"] = spec.secret("sas_token")
    if spec.secret("bearer_token"):
        kw["token"] = spec.secret("bearer_token")
    extra = _extra_config(spec)
    if len(kw) == 1 and not spec.from_env and not _config_has_credentials(extra):
        kw["skip_signature"] = True
    if spec.option("endpoint_url"):
        kw["endpoint"] = spec.option("endpoint_url")
    return AzureStore(
        spec.option("container"),
        prefix=spec.option("prefix") or None,
        config=extra or None,  # type: ignore[arg-type]
        client_options=_client_options(spec),  # type: ignore[arg-type]
        retry_config=OBSTORE_RETRY_CONFIG,  # retries are ours alone: _retry.py
        **kw,
    )


def make_store(spec: StorageSpec) -> ObjectStore:
    """The obstore client of ``spec`` (no I/O but, for local disk, making the directory).

    Raises
    ------
    InvalidInputError
        For an unknown backend, or a local root that a file blocks.
    StorageError
        If the local root cannot be made (permissions).
    """
    if spec.backend == "local":
        root = spec.option("path")
        check_root(root)
        try:
            return LocalStore(prefix=root, mkdir=True)
        except OSError as exc:
            raise StorageError(f"cannot use {root!r} as local storage: {exc}",
                               cause=exc) from exc
    if spec.backend == "memory":
        return MemoryStore()
    if spec.backend == "s3":
        return _s3_store(spec)
    if spec.backend == "gcs":
        return _gcs_store(spec)
    if spec.backend == "azure":
        return _azure_store(spec)
    raise InvalidInputError(f"unknown storage backend {spec.backend!r}")
