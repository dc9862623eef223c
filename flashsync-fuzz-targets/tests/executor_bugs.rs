//! The `core_executor` target can fail: with a bug planted in the executor,
//! some input among a few hundred pseudo-random ones makes it panic, while
//! without one every such input passes.

use flashsync_core::exec::PlantedBugs;
use flashsync_core::rng::Rng;
use flashsync_fuzz_targets::executor::core_executor_with;

/// Inputs tried per bug.
const INPUTS: u64 = 400;

fn input(seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let len = 64 + rng.below(900) as usize;
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// The first input (by seed) on which the target panics.
fn first_failure(bugs: PlantedBugs) -> Option<u64> {
    (0..INPUTS).find(|&seed| {
        let data = input(seed);
        std::panic::catch_unwind(|| core_executor_with(&data, bugs)).is_err()
    })
}

#[test]
fn clean_executor_passes_every_input() {
    let (mut applied, mut verified) = (0, 0);
    for seed in 0..INPUTS {
        let data = input(seed);
        match std::panic::catch_unwind(|| core_executor_with(&data, PlantedBugs::default())) {
            Ok(c) => {
                applied += u64::from(c.commits_applied > 0);
                verified += u64::from(c.views_verified > 0);
            }
            Err(_) => panic!("input of seed {seed} fails without a planted bug"),
        }
    }
    // The inputs reach the states worth checking.
    assert!(applied >= INPUTS / 10, "only {applied} inputs applied a commit");
    assert!(verified >= INPUTS / 10, "only {verified} inputs ended with a running view compared");
}

#[test]
fn reordered_store_actions_are_caught() {
    let bugs = PlantedBugs { reorder_store: true, ..Default::default() };
    assert!(first_failure(bugs).is_some(), "no input caught store actions run out of order");
}

#[test]
fn durable_before_persist_is_caught() {
    let bugs = PlantedBugs { durable_before_persist: true, ..Default::default() };
    assert!(first_failure(bugs).is_some(), "no input caught batches reported durable before a persist");
}
