//! The harness's check that store steps come in emission order.

use crate::exec::StoreStep;
use crate::machine::StoreAction;
use crate::store::Generation;

use super::Harness;

impl Harness {
    /// The step handed out must be the oldest store action not yet handed
    /// out (batches the gate refused are answered without the driver).
    pub(super) fn check_order(&mut self, step: &StoreStep<Box<dyn Generation>>) {
        let mut expect = |matches: &dyn Fn(&StoreAction) -> bool, what: &str| loop {
            match self.emitted.pop_front() {
                Some(a) if matches(&a) => return,
                Some(StoreAction::Apply(_)) => continue,
                other => panic!("store step {what} handed out, but the oldest action is {other:?}"),
            }
        };
        match step {
            StoreStep::PutView(v) => expect(
                &|a| matches!(a, StoreAction::PutView { view, .. } if view.relation_id == v.relation_id),
                "put view",
            ),
            StoreStep::PutJob(j) => expect(&|a| matches!(a, StoreAction::PutJob { job, .. } if job == j), "put job"),
            StoreStep::Forget(id) => {
                expect(&|a| matches!(a, StoreAction::Forget { relation_id, .. } if relation_id == id), "forget")
            }
            StoreStep::ForgetOrigin(_) => expect(&|a| matches!(a, StoreAction::ForgetOrigin { .. }), "forget origin"),
            StoreStep::Publish { op, .. } => {
                expect(&|a| matches!(a, StoreAction::Publish { op: o, .. } if o == op), "publish")
            }
            StoreStep::Discard { op, .. } => {
                expect(&|a| matches!(a, StoreAction::Discard { op: o } if o == op), "discard")
            }
            StoreStep::Amend { op, .. } => {
                expect(&|a| matches!(a, StoreAction::Amend { op: o, .. } if o == op), "amend")
            }
            StoreStep::Resume { id, .. } => {
                expect(&|a| matches!(a, StoreAction::Resume { id: i, .. } if i == id), "resume")
            }
            StoreStep::Fence(op) => expect(&|a| matches!(a, StoreAction::Fence { op: o } if o == op), "fence"),
            StoreStep::Apply(run) => {
                for b in run {
                    expect(&|a| matches!(a, StoreAction::Apply(x) if x.seq == b.seq), "apply")
                }
            }
        }
    }
}
