//! Persistence layer for shards: see docs/storage.md (work in progress).
