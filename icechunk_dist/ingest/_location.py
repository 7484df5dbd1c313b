"""Where a run writes: the repository's storage, checked before any work, and tidied after
a run that landed nothing.

- S3 settings that cannot work are configuration errors before any request: a plain
  ``http://`` endpoint without ``allow_http``, no credentials for an S3-compatible endpoint,
  and (when the first request shows it) no credentials for AWS.
- A missing repository is not created by looking at it: a local directory that does not
  exist is not made until the repository is created.
- A run that created the repository and landed nothing takes it back, and directories it
  created are removed if they are empty: a failed first ingest or a dry run leaves the
  location as it found it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from icechunk_dist import _sync
from icechunk_dist.errors import (
    AlreadyExistsError,
    IcechunkDistError,
    InvalidInputError,
    RepositoryNotFoundError,
    StorageError,
)
from icechunk_dist.keys import REPO_KEY
from icechunk_dist.repository import Repository
from icechunk_dist.storage import Storage, from_url, local_filesystem_storage

__all__ = ["IN_MEMORY_WITH_CLUSTER", "Location", "check_s3_settings", "credentials_error"]

IN_MEMORY_WITH_CLUSTER = (
    "the repository is in-memory storage, which exists only inside this process: the Dask "
    "cluster's workers cannot reach it. Use a path or an object-store URL for the "
    "repository, or run without a cluster (no client, --workers or --scheduler)"
)

_S3_SCHEMES = ("s3", "s3a")
# where obstore finds AWS credentials besides explicit keys (it does not read profiles)
_AWS_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE",
                       "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                       "AWS_CONTAINER_CREDENTIALS_FULL_URI")
_SET_CREDENTIALS = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or pass access_key_id "
                    "and secret_access_key in storage_options; anonymous=True for a public "
                    "bucket)")


def _is_s3(url: Any) -> bool:
    return isinstance(url, str) and urlsplit(url).scheme.lower() in _S3_SCHEMES


def check_s3_settings(url: str, options: Mapping[str, Any]) -> None:
    """Refuse S3 settings for ``url`` that cannot work, before any request.

    Raises
    ------
    InvalidInputError
        For a plain-HTTP endpoint without ``allow_http``, or an S3-compatible endpoint
        without credentials; the message says what to set.
    """
    if not _is_s3(url):
        return
    keys = options.get("access_key_id") is not None
    from_env = options.get("from_env", not keys)
    env = os.environ if from_env else {}
    endpoint = (options.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3")
                or env.get("AWS_ENDPOINT_URL") or "")
    allow_http = bool(options.get("allow_http")) or str(
        env.get("AWS_ALLOW_HTTP", "")).lower() in ("1", "true")
    if endpoint.lower().startswith("http://") and not allow_http:
        raise InvalidInputError(
            f"{url}: the S3 endpoint {endpoint} is plain HTTP, which is refused unless "
            "allowed: pass --allow-http (allow_http=True, or set AWS_ALLOW_HTTP=true), or "
            "use an https:// endpoint"
        )
    anonymous = bool(options.get("anonymous"))
    if endpoint and not keys and not anonymous and not any(env.get(v)
                                                           for v in _AWS_CREDENTIAL_ENV):
        raise InvalidInputError(f"{url}: no S3 credentials for {endpoint}: {_SET_CREDENTIALS}")


def credentials_error(e: StorageError, url: str) -> IcechunkDistError:
    """``e``, or a configuration error if it shows that no AWS credentials were found (the
    instance metadata service was asked and did not answer)."""
    text = str(e)
    if "169.254.169.254" in text or "credential" in text.lower():
        return InvalidInputError(f"{url}: no S3 credentials were found: {_SET_CREDENTIALS}")
    return e


def _local_root(repo_or_url: Any, storage: Storage) -> str | None:
    """The directory of a local repository given as a path or ``file://`` URL, else None
    (checked against the storage ``from_url`` made of it)."""
    if storage.backend != "local" or not isinstance(repo_or_url, str | os.PathLike):
        return None
    text = os.fspath(repo_or_url)
    path = unquote(urlsplit(text).path) if text.lower().startswith("file:") else text
    try:
        same = local_filesystem_storage(path) == storage
    except InvalidInputError:
        return None
    return os.path.abspath(os.path.expanduser(path)) if same else None


class Location:
    """The repository of one run: its storage, the repository if it exists, and what this
    run created (to take back if the run lands nothing).

    Raises
    ------
    InvalidInputError
        For a bad URL or S3 settings that cannot work.
    StorageError
        If the storage cannot be reached.
    """

    def __init__(self, repo_or_url: Repository | Storage | str | os.PathLike[str],
                 options: Mapping[str, Any]) -> None:
        self.created = False
        self.root: str | None = None
        self._made: str | None = None  # the highest directory this run may create
        if isinstance(repo_or_url, Repository):
            self.repo: Repository | None = repo_or_url
            self.storage = repo_or_url.storage
            return
        if isinstance(repo_or_url, Storage):
            self.storage = repo_or_url
        else:
            url = os.fspath(repo_or_url)
            check_s3_settings(url, options)
            self.storage = from_url(url, **options)
        self.root = _local_root(repo_or_url, self.storage)
        if self.root is not None:
            path = self.root
            while not os.path.lexists(path) and os.path.dirname(path) != path:
                self._made, path = path, os.path.dirname(path)
            if self._made is not None and not os.path.isdir(path):
                raise InvalidInputError(
                    f"local storage at {self.root!r} cannot be made: {path!r} is a file, not "
                    "a directory")
            if self._made is not None:  # nothing there: looking would create the directory
                self.repo = None
                return
        try:
            exists = Repository.exists(self.storage)
        except StorageError as e:
            raise credentials_error(e, str(repo_or_url)) from None
        self.repo = Repository.open(self.storage) if exists else None

    def describe(self) -> str:
        """The location, for messages."""
        return self.root or self.storage.describe()

    def require(self) -> Repository:
        """The repository (``create=False``).

        Raises
        ------
        RepositoryNotFoundError
            If there is none.
        """
        if self.repo is None:
            raise RepositoryNotFoundError(
                f"no repository at {self.describe()}, and creating one was not asked for "
                "(--no-create): create it with `icechunk-dist init`, or check the path"
            )
        return self.repo

    def check_new(self) -> None:
        """Refuse a location where a new repository cannot go cleanly (not empty).

        Raises
        ------
        InvalidInputError
            If something other than a repository is there.
        """
        if self.repo is not None or self._made is not None:
            return
        if not _sync.run(self.storage.is_empty()):
            raise InvalidInputError(
                f"{self.describe()} is not empty and holds no repository: a new repository "
                "needs an empty (or missing) location"
            )

    def create(self) -> Repository:
        """The repository, created now if missing."""
        if self.repo is None:
            try:
                self.repo = Repository.create(self.storage)
                self.created = True
            except AlreadyExistsError:  # created concurrently by someone else
                self.repo = Repository.open(self.storage)
        return self.repo

    def finish(self, landed: bool) -> None:
        """After a run that landed nothing: take back a repository it created, and remove
        the (empty) directories it created. Never raises."""
        if landed:
            return
        if self.created and self.repo is not None:
            with contextlib.suppress(Exception):
                self._take_back(self.repo)
        if self.root is None or not (self.created or self._made is not None):
            return
        for path, _dirs, _files in sorted(os.walk(self.root), reverse=True):
            if path != self.root:
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # only if empty
        path = self.root
        while self._made is not None:
            try:
                os.rmdir(path)
            except OSError:
                return
            if path == self._made:
                return
            path = os.path.dirname(path)

    def _take_back(self, repo: Repository) -> None:
        """Delete the repository this run created, if it is still as created: one branch at
        the initial snapshot, no tags (another process may have started using it)."""
        if repo.list_branches() != {"main"} or repo.list_tags():
            return
        if len(list(repo.ancestry(branch="main"))) != 1:
            return
        storage = self.storage
        keys = [m.key for m in storage.list_sync("")]
        # the marker first: from then on no one opens it as a repository
        marker = [k for k in keys if k == REPO_KEY]
        _sync.run(storage.delete_many(marker))
        _sync.run(storage.delete_many([k for k in keys if k not in marker]))
        staged = [m.key for m in _sync.run(_collect(storage))]
        if staged:
            _sync.run(storage.delete_staged(staged))


async def _collect(storage: Storage) -> list[Any]:
    return [m async for m in storage.list_staged("")]
