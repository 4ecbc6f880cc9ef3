"""The artifact store: one `Store` interface, a local-directory and an S3 backend.

`S3Store` is imported on first use, so `import rlkd.store` does not load minio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlkd.store.base import Store, validate_key
from rlkd.store.cache import cache_entry, cache_key, cached_json
from rlkd.store.config import Credentials, S3Config
from rlkd.store.local import LocalStore

if TYPE_CHECKING:
    from rlkd.store.s3 import S3Store

__all__ = [
    "Credentials",
    "LocalStore",
    "S3Config",
    "S3Store",
    "Store",
    "cache_entry",
    "cache_key",
    "cached_json",
    "validate_key",
]


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from rlkd.store.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
