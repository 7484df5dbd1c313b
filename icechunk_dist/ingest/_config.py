"""The ingestion config file: a :class:`IngestConfig` parsed from JSON or YAML."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from icechunk_dist.errors import InvalidInputError

__all__ = ["IngestConfig", "load_config"]


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What one ingestion does; the CLI's ``--config`` file and the Helm chart's values.

    Attributes
    ----------
    repo
        Repository URL: a path, ``file:///path``, ``s3://bucket/prefix``, ``gs://``,
        ``az://`` (anything :func:`icechunk_dist.storage.from_url` takes).
    sources
        Paths, ``file://`` or ``s3://`` URLs, or globs of either (``s3://raw/2024/*.nc``).
    concat_dim
        Dimension the files are concatenated (and later appended) along; default: ``time``
        if the files have it, else their unlimited dimension.
    group
        Zarr group of the dataset inside the repository (default: the root).
    branch
        Branch to commit to (created at ``main``'s tip if missing).
    batch_size
        Land every ``batch_size`` files as their own commit (default: one commit).
    message
        Commit message.
    chunks
        Chunk size per dimension name when the group is created (``{time: 24}``; -1: the
        whole dimension).
    unpack
        Land packed variables (``scale_factor``/``add_offset``) decoded, as floats.
    checksum
        Tell changed sources by a SHA-256 of their content.
    reingest_changed
        Re-ingest in place landed sources that changed (else they are an error).
    create
        Create the repository if it is missing (false: refuse).
    virtual
        Reference the chunks of NetCDF/HDF5 sources in place instead of copying them.
    endpoint_url, allow_http, region
        S3 settings, for the repository and for sources on S3 alike.
    """

    repo: str
    sources: list[str]
    concat_dim: str | None = None
    group: str | None = None
    branch: str = "main"
    batch_size: int | None = None
    message: str | None = None
    chunks: dict[str, int] | None = None
    unpack: bool = False
    checksum: bool = False
    reingest_changed: bool = False
    create: bool = True
    virtual: bool = False
    endpoint_url: str | None = None
    allow_http: bool = False
    region: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.repo:
            raise InvalidInputError("repo must be a non-empty path or URL")
        if not self.branch:
            raise InvalidInputError("branch must be a non-empty name")


def load_config(path: str | Path) -> IngestConfig:
    """Read an :class:`IngestConfig` from a JSON file (YAML for ``.yaml``/``.yml``).

    Raises
    ------
    InvalidInputError
        If the file is missing or unparsable, a key is unknown, a required key is missing or
        a value has the wrong type; the message names the file and the key.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InvalidInputError(f"cannot read ingestion config {str(p)!r}: {e.strerror or e}"
                                ) from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise InvalidInputError(
                    f"ingestion config {str(p)!r} is YAML, which needs PyYAML "
                    "(pip install 'icechunk_dist[xarray]'), or use JSON"
                ) from None
            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except InvalidInputError:
        raise
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInputError(f"cannot parse ingestion config {str(p)!r}: {first}") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"ingestion config {str(p)!r} must be a mapping of keys")
    try:
        return msgspec.convert(doc, IngestConfig)
    except msgspec.ValidationError as e:
        raise InvalidInputError(f"invalid ingestion config {str(p)!r}: {e}") from None
