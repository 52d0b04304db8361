//! Durable storage: the TransferLog and MaxValueTracker implementations (RocksDB and in-memory).
