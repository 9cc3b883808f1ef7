"""deja's response cache: an exact tier and a semantic tier, scoped, in memory or shared through Redis."""

from cache.embedder import Embedder, SentenceTransformerEmbedder
from cache.errors import CacheConfigError, CacheError, CacheUnavailableError, EmbeddingUnavailableError
from cache.factory import build_cache
from cache.gate import StaticEmbedder
from cache.index import Match, VectorIndex
from cache.redis_store import Keys, RedisStore
from cache.scope import NEUTRAL_FIELDS, Scope, build_scope, exact_key
from cache.semantic import CacheStats, LookupResult, QueryVectors, SemanticCache
from cache.store import CacheEntry, CacheStore, MemoryStore, StoreCounts
from cache.verify import Verdict, Verifier

__all__ = [
    "NEUTRAL_FIELDS",
    "CacheConfigError",
    "CacheEntry",
    "CacheError",
    "CacheStats",
    "CacheStore",
    "CacheUnavailableError",
    "Embedder",
    "EmbeddingUnavailableError",
    "Keys",
    "LookupResult",
    "Match",
    "QueryVectors",
    "MemoryStore",
    "RedisStore",
    "Scope",
    "SemanticCache",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "StoreCounts",
    "VectorIndex",
    "Verdict",
    "Verifier",
    "build_cache",
    "build_scope",
    "exact_key",
]
