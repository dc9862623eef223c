//! The store conformance suite against the in-memory reference store.

use flashsync_core::conformance;
use flashsync_core::memory::MemoryStore;

#[test]
fn memory_store_passes_the_conformance_suite() {
    let result =
        futures::executor::block_on(conformance::run_all_with_crash(MemoryStore::new, |store: MemoryStore| {
            store.crash();
            store
        }));
    if let Err(failures) = result {
        panic!("{failures}");
    }
}

/// Deliberately broken stores: the suite must notice each defect, or it
/// proves nothing about the stores it passes.
mod mutants {
    use async_trait::async_trait;
    use flashsync_core::conformance::{self, Failures};
    use flashsync_core::memory::MemoryStore;
    use flashsync_core::rowops::ApplyReport;
    use flashsync_core::{
        ApplyBatch, BatchSeq, Generation, JobRecord, Key, KeyRange, OriginId, Progress, RelationId, RelationSchema,
        Row, RowOp, RowSink, Store, StoreError, StoredState, ViewOps, ViewRecord,
    };

    #[derive(Clone, Copy, PartialEq)]
    enum Defect {
        /// Scans come out in reverse key order.
        ReversedScans,
        /// Batches never record progress, and stage nothing.
        IgnoresProgress,
        /// Staged parts of a transaction are applied at once (readers see
        /// half a transaction).
        AppliesStagedParts,
        /// Truncates are dropped.
        IgnoresTruncate,
        /// `forget` leaves the job behind.
        ForgetKeepsJob,
        /// `count` counts distinct rows, not copies.
        CountsDistinctRows,
        /// A checkpoint only amends: nothing of it is kept.
        CheckpointNotKept,
    }

    #[derive(Clone)]
    struct Broken {
        inner: MemoryStore,
        defect: Defect,
    }

    #[async_trait]
    impl Store for Broken {
        async fn load(&self) -> Result<StoredState, StoreError> {
            self.inner.load().await
        }
        async fn put_view(&self, view: &ViewRecord) -> Result<(), StoreError> {
            self.inner.put_view(view).await
        }
        async fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
            self.inner.put_job(job).await
        }
        async fn forget(&self, id: RelationId) -> Result<(), StoreError> {
            let job = self.inner.load().await?.jobs.into_iter().find(|j| j.relation_id == id);
            self.inner.forget(id).await?;
            match (self.defect, job) {
                (Defect::ForgetKeepsJob, Some(job)) => self.inner.put_job(&job).await,
                _ => Ok(()),
            }
        }
        async fn forget_origin(&self, origin: &OriginId) -> Result<(), StoreError> {
            self.inner.forget_origin(origin).await
        }
        async fn begin_generation(
            &self,
            id: RelationId,
            schema: &RelationSchema,
        ) -> Result<Box<dyn Generation>, StoreError> {
            let inner = self.inner.begin_generation(id, schema).await?;
            Ok(match self.defect {
                Defect::CheckpointNotKept => Box::new(Forgetful(inner)),
                _ => inner,
            })
        }
        fn resumes_generations(&self) -> bool {
            self.inner.resumes_generations()
        }
        async fn resume_generation(
            &self,
            id: RelationId,
            schema: &RelationSchema,
            after: &Key,
        ) -> Result<Option<Box<dyn Generation>>, StoreError> {
            self.inner.resume_generation(id, schema, after).await
        }
        async fn apply(&self, mut batch: ApplyBatch) -> Result<ApplyReport, StoreError> {
            match self.defect {
                Defect::IgnoresProgress => batch.progress = Progress::Replay,
                Defect::AppliesStagedParts if matches!(batch.progress, Progress::Stage { .. }) => {
                    batch.progress = Progress::Replay;
                }
                Defect::IgnoresTruncate => {
                    for v in &mut batch.views {
                        v.ops.retain(|op| !matches!(op, RowOp::Truncate));
                    }
                }
                _ => {}
            }
            self.inner.apply(batch).await
        }
        async fn persist(&self) -> Result<Option<BatchSeq>, StoreError> {
            self.inner.persist().await
        }
        async fn get(&self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
            self.inner.get(id, key).await
        }
        async fn scan(&self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
            let mut rows = self.inner.scan(id, range, limit).await?;
            if self.defect == Defect::ReversedScans {
                rows.reverse();
            }
            Ok(rows)
        }
        async fn count(&self, id: RelationId) -> Result<u64, StoreError> {
            if self.defect == Defect::CountsDistinctRows {
                let mut rows = self.inner.scan(id, &KeyRange::default(), usize::MAX).await?;
                rows.dedup();
                return Ok(rows.len() as u64);
            }
            self.inner.count(id).await
        }
    }

    /// A generation whose checkpoints keep nothing.
    struct Forgetful(Box<dyn Generation>);

    #[async_trait]
    impl RowSink for Forgetful {
        async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
            self.0.write(rows).await
        }
    }

    #[async_trait]
    impl Generation for Forgetful {
        async fn publish(self: Box<Self>, job: &JobRecord) -> Result<(), StoreError> {
            self.0.publish(job).await
        }
        async fn discard(self: Box<Self>) -> Result<(), StoreError> {
            self.0.discard().await
        }
        async fn amend(&mut self, ops: ViewOps) -> Result<ApplyReport, StoreError> {
            self.0.amend(ops).await
        }
        async fn checkpoint(&mut self, ops: ViewOps, _job: &JobRecord) -> Result<ApplyReport, StoreError> {
            self.0.amend(ops).await
        }
    }

    fn failing_checks(defect: Defect) -> Vec<&'static str> {
        let result = futures::executor::block_on(conformance::run_all(|| Broken { inner: MemoryStore::new(), defect }));
        match result {
            Ok(()) => Vec::new(),
            Err(Failures(failures)) => failures.into_iter().map(|f| f.check).collect(),
        }
    }

    #[test]
    fn the_suite_catches_broken_stores() {
        for (defect, check) in [
            (Defect::ReversedScans, "scan_order_and_ranges"),
            (Defect::IgnoresProgress, "staged_transactions"),
            (Defect::AppliesStagedParts, "staged_transactions"),
            (Defect::IgnoresProgress, "catalog_round_trip"),
            (Defect::IgnoresTruncate, "truncate_then_insert"),
            (Defect::ForgetKeepsJob, "forget_removes_everything"),
            (Defect::CountsDistinctRows, "count_rows"),
            (Defect::CountsDistinctRows, "full_row_multisets"),
        ] {
            let failing = failing_checks(defect);
            assert!(failing.contains(&check), "{check} did not catch the defect; failing checks: {failing:?}");
        }
    }

    #[test]
    fn the_crash_checks_catch_a_store_that_forgets_everything() {
        let result = futures::executor::block_on(conformance::run_all_with_crash(
            MemoryStore::new,
            // "Restarting" into an empty store: nothing durable survives.
            |_lost: MemoryStore| MemoryStore::new(),
        ));
        let failing: Vec<_> = match result {
            Ok(()) => Vec::new(),
            Err(Failures(failures)) => failures.into_iter().map(|f| f.check).collect(),
        };
        assert_eq!(
            failing,
            ["crash_keeps_persisted_batches", "crash_keeps_durable_mutations", "checkpoints_survive_a_crash"]
        );
    }

    #[test]
    fn the_crash_checks_catch_a_checkpoint_that_keeps_nothing() {
        let result = futures::executor::block_on(conformance::run_all_with_crash(
            || Broken { inner: MemoryStore::new(), defect: Defect::CheckpointNotKept },
            |store: Broken| {
                store.inner.crash();
                store
            },
        ));
        let failing: Vec<_> = match result {
            Ok(()) => Vec::new(),
            Err(Failures(failures)) => failures.into_iter().map(|f| f.check).collect(),
        };
        assert_eq!(failing, ["checkpoints_survive_a_crash"]);
    }
}
