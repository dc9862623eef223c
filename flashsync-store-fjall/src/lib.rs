//! fjall-backed Store for flashsync: durable, atomic, crash-safe local mirror
