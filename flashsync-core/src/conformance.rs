//! Store conformance suite (to be filled).
