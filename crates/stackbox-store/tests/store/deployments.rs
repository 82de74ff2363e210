use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use stackbox_store::{
    ClientState, Deployment, DeploymentId, DeploymentKind, DeploymentStatus, StepStatus, Store,
    StoreError,
};

use crate::harness::{add_client, client_id, on_both_engines, TestDb};

on_both_engines!(
    a_new_deployment_is_pending_with_its_steps_in_order,
    concurrent_deployments_for_one_client_leave_exactly_one_and_name_it,
    a_client_cannot_start_a_second_deployment_until_the_first_finishes,
    different_clients_deploy_at_the_same_time,
    a_step_that_succeeded_cannot_run_again,
    running_steps_record_their_times_output_and_errors_and_start_the_deployment,
    a_step_interrupted_while_running_is_resumed_only_explicitly_and_counted,
    a_pending_step_cannot_succeed_or_fail_without_running,
    finishing_refuses_success_with_unfinished_steps_and_any_change_afterwards,
    unfinished_deployments_are_listed_oldest_first_for_resuming,
    a_clients_deployments_are_listed_newest_first,
    a_clients_deployments_are_paged_newest_first_and_a_cursor_survives_new_ones,
    who_asked_and_the_change_are_kept_in_the_params_and_read_back,
    deployment_counts_and_durations_cover_finished_deployments_and_steps,
    unknown_clients_deployments_and_steps_are_named_in_errors,
);

const PIPELINE: [&str; 6] = [
    "render",
    "infrastructure",
    "containers",
    "wait_for_health",
    "configure_applications",
    "notify",
];

async fn client_with_deployment(store: &Store, n: u32) -> Deployment {
    let client = add_client(store, n, "professional", ClientState::Provisioning).await;
    store
        .create_deployment(&client.id, DeploymentKind::Create, &PIPELINE)
        .await
        .unwrap()
}

async fn a_new_deployment_is_pending_with_its_steps_in_order(db: &TestDb) {
    let store = db.open().await;
    let deployment = client_with_deployment(&store, 1).await;
    assert_eq!(deployment.status, DeploymentStatus::Pending);
    assert_eq!(deployment.kind, DeploymentKind::Create);
    assert_eq!(deployment.client_id, client_id("client", 1));
    assert_eq!(
        (deployment.started_at, deployment.finished_at),
        (None, None)
    );
    let names: Vec<&str> = deployment.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, PIPELINE);
    for (position, step) in deployment.steps.iter().enumerate() {
        assert_eq!(step.position, position as i64);
        assert_eq!(step.status, StepStatus::Pending);
        assert_eq!(step.attempts, 0);
    }
    assert_eq!(
        DeploymentId::parse(deployment.id.as_str()).unwrap(),
        deployment.id
    );
    assert_eq!(
        store.deployment(&deployment.id).await.unwrap(),
        Some(deployment)
    );
}

async fn concurrent_deployments_for_one_client_leave_exactly_one_and_name_it(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    for round in 0..3 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (store, client) = (store.clone(), client.id.clone());
            tasks.spawn(async move {
                store
                    .create_deployment(&client, DeploymentKind::Redeploy, &["render"])
                    .await
            });
        }
        let mut created = Vec::new();
        let mut refused = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap() {
                Ok(deployment) => created.push(deployment),
                Err(StoreError::ClientBusy {
                    client: busy,
                    deployment,
                }) => {
                    assert_eq!(busy, client.id);
                    refused.push(deployment);
                }
                Err(other) => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(created.len(), 1, "round {round}: one deployment wins");
        assert_eq!(refused.len(), 7);
        assert!(refused.iter().all(|id| *id == created[0].id));
        let unfinished = store.unfinished_deployments().await.unwrap();
        assert_eq!(unfinished, created);
        store
            .finish_deployment(&created[0].id, DeploymentStatus::Compensated, None)
            .await
            .unwrap();
    }
}

async fn a_client_cannot_start_a_second_deployment_until_the_first_finishes(db: &TestDb) {
    let store = db.open().await;
    let first = client_with_deployment(&store, 1).await;
    let error = store
        .create_deployment(&first.client_id, DeploymentKind::Stop, &["containers"])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientBusy { deployment, .. } if *deployment == first.id),
        "{error:?}"
    );
    assert!(error.to_string().contains(first.id.as_str()), "{error}");
    store.mark_step_running(&first.id, "render").await.unwrap();
    let still_busy = store
        .create_deployment(&first.client_id, DeploymentKind::Stop, &["containers"])
        .await;
    assert!(matches!(still_busy, Err(StoreError::ClientBusy { .. })));
    store
        .finish_deployment(&first.id, DeploymentStatus::Failed, Some("render failed"))
        .await
        .unwrap();
    let second = store
        .create_deployment(&first.client_id, DeploymentKind::Stop, &["containers"])
        .await
        .unwrap();
    assert_eq!(second.kind, DeploymentKind::Stop);
}

async fn different_clients_deploy_at_the_same_time(db: &TestDb) {
    let store = db.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..6 {
        add_client(&store, n, "starter", ClientState::Provisioning).await;
        let store = store.clone();
        tasks.spawn(async move {
            store
                .create_deployment(&client_id("client", n), DeploymentKind::Create, &PIPELINE)
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    assert_eq!(store.unfinished_deployments().await.unwrap().len(), 6);
}

async fn a_step_that_succeeded_cannot_run_again(db: &TestDb) {
    let store = db.open().await;
    let deployment = client_with_deployment(&store, 1).await;
    let id = &deployment.id;
    store.mark_step_running(id, "render").await.unwrap();
    store.mark_step_succeeded(id, "render", None).await.unwrap();
    for attempt in [
        store.mark_step_running(id, "render").await,
        store.resume_step(id, "render").await,
        store.mark_step_failed(id, "render", "late failure").await,
        store.mark_step_skipped(id, "render").await,
        store.mark_step_succeeded(id, "render", None).await,
    ] {
        let error = attempt.unwrap_err();
        assert!(
            matches!(
                &error,
                StoreError::StepTransition { from: StepStatus::Succeeded, step, .. }
                    if step == "render"
            ),
            "{error:?}"
        );
    }
    store.mark_step_skipped(id, "infrastructure").await.unwrap();
    let error = store
        .mark_step_running(id, "infrastructure")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::StepTransition {
                from: StepStatus::Skipped,
                to: StepStatus::Running,
                ..
            }
        ),
        "{error:?}"
    );
    let stored = store.deployment(id).await.unwrap().unwrap();
    assert_eq!(stored.step("render").unwrap().attempts, 1);
    assert_eq!(stored.step("render").unwrap().status, StepStatus::Succeeded);
}

async fn running_steps_record_their_times_output_and_errors_and_start_the_deployment(db: &TestDb) {
    let store = db.open().await;
    let deployment = client_with_deployment(&store, 1).await;
    let id = &deployment.id;
    let running = store.mark_step_running(id, "render").await.unwrap();
    assert_eq!(running.status, StepStatus::Running);
    assert_eq!(running.attempts, 1);
    assert!(running.started_at.is_some());
    assert_eq!(running.finished_at, None);
    let started = store.deployment(id).await.unwrap().unwrap();
    assert_eq!(started.status, DeploymentStatus::Running);
    assert_eq!(started.started_at, running.started_at);
    let output = json!({"bundle": "/srv/stackbox/clients/client-00000001", "files": 14});
    let succeeded = store
        .mark_step_succeeded(id, "render", Some(&output))
        .await
        .unwrap();
    assert_eq!(succeeded.status, StepStatus::Succeeded);
    assert_eq!(succeeded.output.as_ref(), Some(&output));
    assert!(succeeded.finished_at >= succeeded.started_at);
    store.mark_step_running(id, "infrastructure").await.unwrap();
    let failed = store
        .mark_step_failed(
            id,
            "infrastructure",
            "network client-00000001_web: pool exhausted",
        )
        .await
        .unwrap();
    assert_eq!(failed.status, StepStatus::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("network client-00000001_web: pool exhausted")
    );
    let stored = store.deployment(id).await.unwrap().unwrap();
    // The deployment's start is its first step's, not moved by later steps.
    assert_eq!(stored.started_at, running.started_at);
    assert_eq!(stored.step("render"), Some(&succeeded));
    assert_eq!(stored.step("infrastructure"), Some(&failed));
    assert_eq!(
        stored.step("containers").unwrap().status,
        StepStatus::Pending
    );
}

async fn a_step_interrupted_while_running_is_resumed_only_explicitly_and_counted(db: &TestDb) {
    let store = db.open().await;
    let deployment = client_with_deployment(&store, 1).await;
    let id = &deployment.id;
    store.mark_step_running(id, "render").await.unwrap();
    // The control plane "crashes" here; after a restart the step is found running.
    drop(store);
    let store = db.open().await;
    let resumed = store.unfinished_deployments().await.unwrap();
    assert_eq!(
        resumed[0].step("render").unwrap().status,
        StepStatus::Running
    );
    let error = store.mark_step_running(id, "render").await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::StepTransition {
                from: StepStatus::Running,
                to: StepStatus::Running,
                ..
            }
        ),
        "{error:?}"
    );
    let again = store.resume_step(id, "render").await.unwrap();
    assert_eq!(again.attempts, 2);
    assert_eq!(again.status, StepStatus::Running);
    store.mark_step_succeeded(id, "render", None).await.unwrap();
}

async fn a_pending_step_cannot_succeed_or_fail_without_running(db: &TestDb) {
    let store = db.open().await;
    let deployment = client_with_deployment(&store, 1).await;
    let id = &deployment.id;
    for attempt in [
        store.mark_step_succeeded(id, "render", None).await,
        store.mark_step_failed(id, "render", "never ran").await,
        store.resume_step(id, "render").await,
    ] {
        assert!(
            matches!(
                attempt,
                Err(StoreError::StepTransition {
                    from: StepStatus::Pending,
                    ..
                })
            ),
            "{attempt:?}"
        );
    }
}

async fn finishing_refuses_success_with_unfinished_steps_and_any_change_afterwards(db: &TestDb) {
    let store = db.open().await;
    let deployment = client_with_deployment(&store, 1).await;
    let id = &deployment.id;
    store.mark_step_running(id, "render").await.unwrap();
    store.mark_step_succeeded(id, "render", None).await.unwrap();
    store.mark_step_skipped(id, "notify").await.unwrap();
    let error = store
        .finish_deployment(id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap_err();
    match &error {
        StoreError::UnfinishedSteps { steps, .. } => assert_eq!(
            steps,
            &[
                "infrastructure",
                "containers",
                "wait_for_health",
                "configure_applications"
            ]
        ),
        other => panic!("expected UnfinishedSteps, got {other:?}"),
    }
    for status in [DeploymentStatus::Pending, DeploymentStatus::Running] {
        let error = store.finish_deployment(id, status, None).await.unwrap_err();
        assert!(
            matches!(error, StoreError::NotAFinalStatus { .. }),
            "{error:?}"
        );
    }
    let finished = store
        .finish_deployment(
            id,
            DeploymentStatus::Compensated,
            Some("rolled back after a crash"),
        )
        .await
        .unwrap();
    assert_eq!(finished.status, DeploymentStatus::Compensated);
    assert_eq!(finished.error.as_deref(), Some("rolled back after a crash"));
    assert!(finished.finished_at.is_some());
    assert_eq!(store.deployment(id).await.unwrap(), Some(finished));
    for attempt in [
        store.mark_step_running(id, "containers").await.err(),
        store.mark_step_skipped(id, "containers").await.err(),
        store
            .finish_deployment(id, DeploymentStatus::Succeeded, None)
            .await
            .err(),
    ] {
        assert!(
            matches!(
                attempt,
                Some(StoreError::DeploymentFinished {
                    status: DeploymentStatus::Compensated,
                    ..
                })
            ),
            "{attempt:?}"
        );
    }
}

async fn unfinished_deployments_are_listed_oldest_first_for_resuming(db: &TestDb) {
    let store = db.open().await;
    let mut created = Vec::new();
    for n in 0..4 {
        created.push(client_with_deployment(&store, n).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store
        .mark_step_running(&created[2].id, "render")
        .await
        .unwrap();
    store
        .finish_deployment(&created[1].id, DeploymentStatus::Failed, None)
        .await
        .unwrap();
    let unfinished = store.unfinished_deployments().await.unwrap();
    let ids: Vec<_> = unfinished.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            created[0].id.clone(),
            created[2].id.clone(),
            created[3].id.clone()
        ]
    );
    assert_eq!(unfinished[1].status, DeploymentStatus::Running);
    assert!(unfinished.iter().all(|d| d.steps.len() == PIPELINE.len()));
}

async fn a_clients_deployments_are_listed_newest_first(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let mut ids = Vec::new();
    for kind in [
        DeploymentKind::Create,
        DeploymentKind::Stop,
        DeploymentKind::Start,
    ] {
        let deployment = store
            .create_deployment(&client.id, kind, &["containers"])
            .await
            .unwrap();
        store
            .finish_deployment(&deployment.id, DeploymentStatus::Failed, None)
            .await
            .unwrap();
        ids.push(deployment.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let other = client_with_deployment(&store, 2).await;
    let listed = store.deployments_of_client(&client.id, 10).await.unwrap();
    let listed_ids: Vec<_> = listed.iter().map(|d| d.id.clone()).collect();
    assert_eq!(listed_ids, ids.iter().rev().cloned().collect::<Vec<_>>());
    assert!(!listed_ids.contains(&other.id));
    assert!(listed.iter().all(|d| d.steps.len() == 1));
    let newest_two = store.deployments_of_client(&client.id, 2).await.unwrap();
    assert_eq!(newest_two, listed[..2].to_vec());
}

async fn a_clients_deployments_are_paged_newest_first_and_a_cursor_survives_new_ones(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let _other = client_with_deployment(&store, 2).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let deployment = store
            .create_deployment(
                &client.id,
                DeploymentKind::Redeploy,
                &["render", "containers"],
            )
            .await
            .unwrap();
        store
            .finish_deployment(&deployment.id, DeploymentStatus::Failed, Some("test"))
            .await
            .unwrap();
        ids.push(deployment.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids.reverse();
    let first = store
        .deployment_page_of_client(&client.id, None, 2)
        .await
        .unwrap();
    let first_ids: Vec<_> = first.deployments.iter().map(|d| d.id.clone()).collect();
    assert_eq!(first_ids, ids[..2]);
    assert_eq!(first.next.as_ref(), Some(&ids[1]));
    assert!(first.deployments.iter().all(|d| d.steps.len() == 2));
    // A deployment made between two pages does not shift the next one.
    let newest = store
        .create_deployment(&client.id, DeploymentKind::Stop, &["stop"])
        .await
        .unwrap();
    let second = store
        .deployment_page_of_client(&client.id, first.next.as_ref(), 2)
        .await
        .unwrap();
    let second_ids: Vec<_> = second.deployments.iter().map(|d| d.id.clone()).collect();
    assert_eq!(second_ids, ids[2..4]);
    let last = store
        .deployment_page_of_client(&client.id, second.next.as_ref(), 2)
        .await
        .unwrap();
    let last_ids: Vec<_> = last.deployments.iter().map(|d| d.id.clone()).collect();
    assert_eq!(last_ids, ids[4..]);
    assert_eq!(last.next, None);
    let everything = store
        .deployment_page_of_client(&client.id, None, 500)
        .await
        .unwrap();
    assert_eq!(everything.deployments.len(), 6);
    assert_eq!(everything.deployments[0].id, newest.id);
    assert_eq!(everything.next, None);
    assert!(matches!(
        store.deployment_page_of_client(&client.id, None, 0).await,
        Err(StoreError::InvalidLimit { limit: 0 })
    ));
}

async fn who_asked_and_the_change_are_kept_in_the_params_and_read_back(db: &TestDb) {
    use stackbox_store::{FieldChange, RequestedBy, TokenRole, CHANGES_PARAM, REQUESTED_BY_PARAM};
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let token = store
        .create_token(TokenRole::Operator, None)
        .await
        .unwrap()
        .info;
    let by = RequestedBy::Token {
        id: token.id.clone(),
        role: TokenRole::Operator,
    };
    let changes = std::collections::BTreeMap::from([(
        "company_name".to_string(),
        FieldChange {
            from: json!("Client 1"),
            to: json!("Client One"),
        },
    )]);
    let params = json!({
        REQUESTED_BY_PARAM: by.to_json(),
        CHANGES_PARAM: FieldChange::map_to_json(&changes),
    });
    let created = store
        .create_deployment_with_params(
            &client.id,
            DeploymentKind::Redeploy,
            &["render"],
            Some(&params),
        )
        .await
        .unwrap();
    let page = store
        .deployment_page_of_client(&client.id, None, 10)
        .await
        .unwrap();
    let read = &page.deployments[0];
    assert_eq!(read.id, created.id);
    assert_eq!(read.requested_by(), Some(by));
    assert_eq!(read.changes(), changes);
    assert!(!read.params.as_ref().unwrap().to_string().contains("sbx_"));
}

async fn deployment_counts_and_durations_cover_finished_deployments_and_steps(db: &TestDb) {
    let store = db.open().await;
    let succeeded = client_with_deployment(&store, 1).await;
    let compensated = client_with_deployment(&store, 2).await;
    let _pending = client_with_deployment(&store, 3).await;
    for step in PIPELINE {
        store.mark_step_running(&succeeded.id, step).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        store
            .mark_step_succeeded(&succeeded.id, step, None)
            .await
            .unwrap();
    }
    let done = store
        .finish_deployment(&succeeded.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    store
        .mark_step_running(&compensated.id, "render")
        .await
        .unwrap();
    store
        .mark_step_failed(&compensated.id, "render", "disk full")
        .await
        .unwrap();
    store
        .mark_step_skipped(&compensated.id, "notify")
        .await
        .unwrap();
    store
        .finish_deployment(
            &compensated.id,
            DeploymentStatus::Compensated,
            Some("disk full"),
        )
        .await
        .unwrap();

    let counts = store.count_deployments_by_status().await.unwrap();
    assert_eq!(counts.len(), DeploymentStatus::ALL.len());
    assert_eq!(counts[&DeploymentStatus::Succeeded], 1);
    assert_eq!(counts[&DeploymentStatus::Compensated], 1);
    assert_eq!(counts[&DeploymentStatus::Pending], 1);
    assert_eq!(counts[&DeploymentStatus::Running], 0);
    assert_eq!(counts[&DeploymentStatus::Failed], 0);

    let finished = store.finished_deployments(None).await.unwrap();
    let finished_ids: BTreeSet<_> = finished.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        finished_ids,
        BTreeSet::from([succeeded.id.clone(), compensated.id.clone()])
    );
    let timed = finished.iter().find(|d| d.id == succeeded.id).unwrap();
    assert_eq!(timed.status, DeploymentStatus::Succeeded);
    assert!(
        timed.duration_seconds() >= 0.018,
        "six steps of at least 3 ms: {}",
        timed.duration_seconds()
    );
    let steps = store.finished_steps(None).await.unwrap();
    // Six succeeded steps and one failed; the skipped one never ran and is not timed.
    assert_eq!(steps.len(), 7);
    assert!(steps.iter().all(|s| s.status != StepStatus::Skipped));
    assert!(steps
        .iter()
        .filter(|s| s.deployment_id == succeeded.id)
        .all(|s| s.duration_seconds() >= 0.003));
    let later = store.finished_deployments(done.finished_at).await.unwrap();
    assert!(later.iter().all(|d| Some(d.finished_at) > done.finished_at));
}

async fn unknown_clients_deployments_and_steps_are_named_in_errors(db: &TestDb) {
    let store = db.open().await;
    let missing = client_id("missing", 7);
    let error = store
        .create_deployment(&missing, DeploymentKind::Create, &["render"])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotFound { client } if *client == missing),
        "{error:?}"
    );
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    for (steps, problem) in [
        (&[][..], "at least one step"),
        (&["render", "render"][..], "appears twice"),
        (&["render", " "][..], "empty"),
    ] {
        let error = store
            .create_deployment(&client.id, DeploymentKind::Create, steps)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::InvalidSteps { problem: p } if p.contains(problem)),
            "{error:?}"
        );
    }
    let long_name = "x".repeat(stackbox_store::MAX_STEP_NAME_CHARS + 1);
    assert!(store
        .create_deployment(&client.id, DeploymentKind::Create, &[&long_name])
        .await
        .is_err());
    let deployment = store
        .create_deployment(&client.id, DeploymentKind::Create, &["render"])
        .await
        .unwrap();
    let error = store
        .mark_step_running(&deployment.id, "no_such_step")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::StepNotFound { step, .. } if step == "no_such_step"),
        "{error:?}"
    );
    let unknown = DeploymentId::parse("dep_000000000000ffffffffffffffff").unwrap();
    assert_eq!(store.deployment(&unknown).await.unwrap(), None);
    let error = store
        .mark_step_running(&unknown, "render")
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::DeploymentNotFound { .. }),
        "{error:?}"
    );
    let error = store
        .finish_deployment(&unknown, DeploymentStatus::Failed, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::DeploymentNotFound { .. }),
        "{error:?}"
    );
    for malformed in [
        "",
        "dep_",
        "dep_XYZ",
        "tok_0000000000000000",
        "dep_000000000000ffffffffffffffff0",
    ] {
        assert!(
            matches!(
                DeploymentId::parse(malformed),
                Err(StoreError::MalformedId { .. })
            ),
            "{malformed}"
        );
    }
}
