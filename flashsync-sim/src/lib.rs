//! Deterministic simulator for flashsync: reconnect storms and commit streams, replayable from a seed
