"""The ``icechunk-dist`` command line: init, log, branches, tags, diff, ingest, gc.

A repository is named by a path or URL, parsed by :func:`icechunk_dist.storage.from_url`: a
plain path or ``file:///path`` is a directory on local disk; ``s3://bucket/prefix`` is S3
(credentials from the environment: ``AWS_*`` variables or the instance role), with
``--endpoint-url`` / ``--allow-http`` for S3-compatible servers; ``gs://`` and ``az://`` are
GCS and Azure.

Each subcommand lives in its own private module with a ``register(sub, common)`` function;
``_main`` assembles the parser.
"""

from icechunk_dist.cli._main import main
from icechunk_dist.ingest import load_config as load_ingest_config

__all__ = ["load_ingest_config", "main"]
