//! A crash injected at every step of a run, then the same run again: the end state is the one
//! an uninterrupted run gives, with no duplicate and nothing lost, on every side.

use std::collections::BTreeMap;

use sealsync_engine::spec::{ConflictPolicy, Direction};
use sealsync_engine::{LinkSpec, RunError, RunOptions};

use crate::harness::*;

type Sides = (
    BTreeMap<String, Person>,
    BTreeMap<String, Person>,
    BTreeMap<String, Person>,
);

async fn setup() -> (World, std::path::PathBuf, std::path::PathBuf) {
    let w = world().await;
    let spec = LinkSpec {
        direction: Direction::Both,
        conflict: ConflictPolicy::HubWins,
        ..LinkSpec::default()
    };
    let a = w.vdir_link("a", spec.clone()).await;
    let b = w.vdir_link("b", spec).await;
    for i in 1..=4 {
        put(
            &a,
            &format!("p{i}.vcf"),
            &card(
                &format!("p{i}"),
                &format!("Person {i}"),
                &format!("p{i}@example.org"),
                "",
            ),
        );
    }
    put(
        &b,
        "q1.vcf",
        &card("q1", "Queued One", "q1@example.org", ""),
    );
    (w, a, b)
}

/// Changes made between the first and the second round of runs.
fn edit(a: &std::path::Path, b: &std::path::Path) {
    put(
        a,
        "p1.vcf",
        &card("p1", "Person 1", "p1@example.org", "edited in a"),
    );
    put(a, "p9.vcf", &card("p9", "Person 9", "p9@example.org", ""));
    std::fs::remove_file(a.join("p4.vcf")).unwrap();
    put(
        b,
        &file_of(b, "p2").file_name().unwrap().to_string_lossy(),
        &card("p2", "Person 2", "p2@example.org", "edited in b"),
    );
}

/// Runs a link, crashing at step `crash` (if the run gets that far), then runs it again.
/// `true` if the crash happened.
async fn run_with_crash(w: &World, link: &str, crash: Option<u64>) -> bool {
    let options = RunOptions {
        batch: 2,
        interrupt_at: crash,
        ..RunOptions::default()
    };
    let crashed = match w.try_sync(link, &options).await {
        Err(RunError::Interrupted(_)) => true,
        Ok(_) => false,
        Err(e) => panic!("{e}"),
    };
    if crashed {
        w.try_sync(
            link,
            &RunOptions {
                batch: 2,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    }
    crashed
}

async fn scenario(crash_round: usize, crash: Option<u64>) -> (Sides, bool) {
    let (w, a, b) = setup().await;
    let mut crashed = false;
    let mut round = 0;
    let mut step = |link: &'static str| {
        round += 1;
        (link, if round == crash_round { crash } else { None })
    };
    for _ in 0..2 {
        let (l, c) = step("a");
        crashed |= run_with_crash(&w, l, c).await;
        let (l, c) = step("b");
        crashed |= run_with_crash(&w, l, c).await;
    }
    edit(&a, &b);
    for _ in 0..2 {
        let (l, c) = step("a");
        crashed |= run_with_crash(&w, l, c).await;
        let (l, c) = step("b");
        crashed |= run_with_crash(&w, l, c).await;
    }
    let sides = (w.hub().await, vdir(&a), vdir(&b));
    (sides, crashed)
}

#[tokio::test]
async fn a_crash_at_any_step_then_a_rerun_converges() {
    let (reference, _) = scenario(0, None).await;
    assert_eq!(reference.0.len(), 5);
    assert_eq!(reference.0, reference.1);
    assert_eq!(reference.0, reference.2);
    let mut crashes = 0;
    for round in 1..=8 {
        for step in 1.. {
            let (sides, crashed) = scenario(round, Some(step)).await;
            if !crashed {
                break;
            }
            crashes += 1;
            assert_eq!(sides, reference, "crash in round {round} at step {step}");
        }
    }
    assert!(crashes > 20, "only {crashes} crash points were exercised");
}
