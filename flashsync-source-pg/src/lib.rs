//! Postgres Source for flashsync: COPY snapshots and pgoutput logical replication
