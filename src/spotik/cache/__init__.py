"""Spotik's cache: namespaces with TTL, priorities, a global size budget, eviction policies, JSON/msgpack codecs,
statistics, an optional shared Redis tier and invalidation by key, tag or namespace.

The app builds one :class:`CacheManager` from its settings (``CacheManager.from_settings(settings)``), awaits
``start()`` in its lifespan and ``stop()`` on the way out. Modules: ``codec`` (bytes in, bytes out), ``policies``
(namespaces and eviction order), ``store`` (the in-process tier), ``redis_tier`` (the shared tier and its
invalidation channel), ``manager`` (the façade).
"""

from spotik.cache.codec import CacheCodecError, Codec
from spotik.cache.manager import CacheManager
from spotik.cache.policies import NamespaceSpec, Policy, Priority
from spotik.cache.redis_tier import RedisConfig
from spotik.cache.store import ENTRY_OVERHEAD, CacheStore, UnknownNamespaceError

__all__ = [
    "ENTRY_OVERHEAD",
    "CacheCodecError",
    "CacheManager",
    "CacheStore",
    "Codec",
    "NamespaceSpec",
    "Policy",
    "Priority",
    "RedisConfig",
    "UnknownNamespaceError",
]
