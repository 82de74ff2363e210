use stackbox_core::rollout::{MemberStatus, RolloutSettings};
use stackbox_store::{NewRolloutMember, RolloutStatus, StoreError};

use crate::harness::{client_id, on_both_engines, TestDb};

on_both_engines!(
    a_rollout_is_recorded_with_its_members_in_order_pending_or_skipped,
    only_one_rollout_runs_at_a_time_and_the_second_names_the_first,
    members_move_only_along_their_transitions_and_a_repeated_move_changes_nothing,
    a_halted_rollout_keeps_its_first_reason_and_ends_halted,
);

fn members(count: u32) -> Vec<NewRolloutMember> {
    (0..count)
        .map(|n| NewRolloutMember {
            client_id: client_id("fleet", n),
            wave: n.min(2),
            from_release: "base".into(),
            skipped: (n == 1).then(|| "stopped: a stopped client is not upgraded".to_string()),
        })
        .collect()
}

async fn a_rollout_is_recorded_with_its_members_in_order_pending_or_skipped(db: &TestDb) {
    let store = &db.open().await;
    let settings = RolloutSettings::default();
    let made = store
        .create_rollout("r2", &settings, None, &members(3))
        .await
        .unwrap();
    assert_eq!(made.status, RolloutStatus::Running);
    assert_eq!(made.settings, settings);
    let statuses: Vec<_> = made.members.iter().map(|m| m.status).collect();
    assert_eq!(
        statuses,
        [
            MemberStatus::Pending,
            MemberStatus::Skipped,
            MemberStatus::Pending
        ]
    );
    assert_eq!(made.members[2].client_id, client_id("fleet", 2));
    assert_eq!(made.members[2].wave, 2);
    assert!(made.members[1]
        .detail
        .as_deref()
        .unwrap()
        .starts_with("stopped"));
    assert_eq!(store.rollout(&made.id).await.unwrap().unwrap(), made);
    assert_eq!(store.running_rollout().await.unwrap().unwrap().id, made.id);
    assert_eq!(store.rollouts(10).await.unwrap(), vec![made]);
}

async fn only_one_rollout_runs_at_a_time_and_the_second_names_the_first(db: &TestDb) {
    let store = &db.open().await;
    let settings = RolloutSettings::default();
    let first = store
        .create_rollout("r2", &settings, None, &members(2))
        .await
        .unwrap();
    match store
        .create_rollout("r3", &settings, None, &members(2))
        .await
    {
        Err(StoreError::RolloutRunning { rollout }) => assert_eq!(rollout, first.id),
        other => panic!("a second running rollout was not refused: {other:?}"),
    }
    assert!(store.finish_rollout(&first.id).await.unwrap());
    assert!(!store.finish_rollout(&first.id).await.unwrap());
    let done = store.rollout(&first.id).await.unwrap().unwrap();
    assert_eq!(done.status, RolloutStatus::Succeeded);
    assert!(done.finished_at.is_some());
    store
        .create_rollout("r3", &settings, None, &members(2))
        .await
        .unwrap();
}

async fn members_move_only_along_their_transitions_and_a_repeated_move_changes_nothing(
    db: &TestDb,
) {
    use MemberStatus::*;
    let store = &db.open().await;
    let made = store
        .create_rollout("r2", &RolloutSettings::default(), None, &members(3))
        .await
        .unwrap();
    let id = &made.id;
    assert!(store
        .move_rollout_member(id, 0, Pending, Running, None, None)
        .await
        .unwrap());
    assert!(!store
        .move_rollout_member(id, 0, Pending, Running, None, None)
        .await
        .unwrap());
    assert!(store
        .move_rollout_member(id, 0, Running, Failed, None, Some("its upgrade failed"))
        .await
        .unwrap());
    let error = store
        .move_rollout_member(id, 0, Failed, Running, None, None)
        .await
        .unwrap_err();
    assert!(error
        .to_string()
        .contains("cannot go from failed to running"));
    assert!(store
        .move_rollout_member(
            id,
            2,
            Pending,
            Skipped,
            None,
            Some("halted before its turn")
        )
        .await
        .unwrap());
    let now = store.rollout(id).await.unwrap().unwrap();
    assert_eq!(now.members[0].status, Failed);
    assert_eq!(now.members[0].detail.as_deref(), Some("its upgrade failed"));
    assert_eq!(now.members[2].status, Skipped);
}

async fn a_halted_rollout_keeps_its_first_reason_and_ends_halted(db: &TestDb) {
    let store = &db.open().await;
    let made = store
        .create_rollout("r2", &RolloutSettings::default(), None, &members(2))
        .await
        .unwrap();
    assert!(store
        .halt_rollout(&made.id, "client fleet-0 failed")
        .await
        .unwrap());
    assert!(!store
        .halt_rollout(&made.id, "a second reason")
        .await
        .unwrap());
    assert!(store.finish_rollout(&made.id).await.unwrap());
    let done = store.rollout(&made.id).await.unwrap().unwrap();
    assert_eq!(done.status, RolloutStatus::Halted);
    assert_eq!(done.halt_reason.as_deref(), Some("client fleet-0 failed"));
}
