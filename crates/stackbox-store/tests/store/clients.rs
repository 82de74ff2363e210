use std::collections::BTreeSet;

use stackbox_core::plan::Plan;
use stackbox_core::secrets::{SecretKey, Secrets};
use stackbox_store::{
    ClientFilter, ClientState, DeploymentKind, DeploymentStatus, MasterKey, StoreError, TokenRole,
    MAX_PAGE_LIMIT,
};

use crate::harness::{add_client, client_id, on_both_engines, spec, TestDb, PLANS};

on_both_engines!(
    clients_redirecting_a_previous_domain_are_found_by_it_and_only_by_it,
    an_inserted_client_reads_back_by_id_and_by_domain,
    a_domain_already_in_use_is_refused_naming_its_owner,
    the_same_client_id_cannot_be_inserted_twice,
    a_configuration_pinned_to_another_id_is_refused,
    setting_a_state_records_the_reason_and_the_update_time,
    counting_clients_by_state_lists_every_state_with_zeros,
    pagination_walks_every_client_exactly_once_with_and_without_filters,
    a_page_limit_of_zero_is_refused_and_large_limits_are_capped,
    deleting_a_client_removes_its_secrets_tokens_and_deployments,
    deleting_a_client_with_an_unfinished_deployment_is_refused,
    updating_a_configuration_replaces_it_and_keeps_the_clients_state,
);

async fn an_inserted_client_reads_back_by_id_and_by_domain(db: &TestDb) {
    let store = db.open().await;
    let id = client_id("smithrealestate", 0xe11f059b);
    let spec = spec(
        "Smith Real Estate",
        "smithrealestate.example.com",
        "professional",
    );
    let record = store
        .insert_client(&id, &spec, ClientState::Provisioning)
        .await
        .unwrap();
    assert_eq!(record.id, id);
    assert_eq!(record.domain.as_str(), "smithrealestate.example.com");
    assert_eq!(record.company_name.as_str(), "Smith Real Estate");
    assert_eq!(record.plan, Plan::Professional);
    assert_eq!(record.state, ClientState::Provisioning);
    assert_eq!(record.state_reason, None);
    assert_eq!(record.created_at, record.updated_at);
    assert_eq!(record.spec_toml, spec.to_toml(&id));
    let mut expected_spec = spec.clone();
    expected_spec.client_id = Some(id.clone());
    assert_eq!(record.spec().unwrap(), expected_spec);
    assert_eq!(store.client(&id).await.unwrap(), Some(record.clone()));
    assert_eq!(
        store.client_by_domain(&spec.domain).await.unwrap(),
        Some(record)
    );
    assert_eq!(store.client(&client_id("nobody", 1)).await.unwrap(), None);
}

async fn a_domain_already_in_use_is_refused_naming_its_owner(db: &TestDb) {
    let store = db.open().await;
    let owner = add_client(&store, 1, "starter", ClientState::Running).await;
    let error = store
        .insert_client(
            &client_id("other", 2),
            &spec("Other Company", owner.domain.as_str(), "enterprise"),
            ClientState::Provisioning,
        )
        .await
        .unwrap_err();
    match &error {
        StoreError::DomainTaken {
            domain,
            owner: taken_by,
        } => {
            assert_eq!(domain, owner.domain.as_str());
            assert_eq!(taken_by, &owner.id);
        }
        other => panic!("expected DomainTaken, got {other:?}"),
    }
    assert!(error.to_string().contains(owner.id.as_str()), "{error}");
    assert_eq!(store.client(&client_id("other", 2)).await.unwrap(), None);
}

async fn the_same_client_id_cannot_be_inserted_twice(db: &TestDb) {
    let store = db.open().await;
    let first = add_client(&store, 1, "starter", ClientState::Running).await;
    let error = store
        .insert_client(
            &first.id,
            &spec("Client 1", "another.example.com", "starter"),
            ClientState::Running,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientExists { client } if *client == first.id),
        "{error:?}"
    );
}

async fn a_configuration_pinned_to_another_id_is_refused(db: &TestDb) {
    let store = db.open().await;
    let mut pinned = spec("Pinned", "pinned.example.com", "starter");
    pinned.client_id = Some(client_id("pinned", 1));
    let error = store
        .insert_client(&client_id("pinned", 2), &pinned, ClientState::Running)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::ClientIdMismatch { .. }),
        "{error:?}"
    );
}

async fn setting_a_state_records_the_reason_and_the_update_time(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Provisioning).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .set_client_state(
            &client.id,
            ClientState::Degraded,
            Some("nextcloud keeps failing its health check"),
        )
        .await
        .unwrap();
    let changed = store.client(&client.id).await.unwrap().unwrap();
    assert_eq!(changed.state, ClientState::Degraded);
    assert_eq!(
        changed.state_reason.as_deref(),
        Some("nextcloud keeps failing its health check")
    );
    assert!(changed.updated_at > client.updated_at);
    assert_eq!(changed.created_at, client.created_at);
    store
        .set_client_state(&client.id, ClientState::Running, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .client(&client.id)
            .await
            .unwrap()
            .unwrap()
            .state_reason,
        None
    );
    let missing = client_id("missing", 9);
    let error = store
        .set_client_state(&missing, ClientState::Running, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotFound { client } if *client == missing),
        "{error:?}"
    );
}

async fn counting_clients_by_state_lists_every_state_with_zeros(db: &TestDb) {
    let store = db.open().await;
    for n in 0..5 {
        let state = if n < 3 {
            ClientState::Running
        } else {
            ClientState::Failed
        };
        add_client(&store, n, "starter", state).await;
    }
    let counts = store.count_clients_by_state().await.unwrap();
    assert_eq!(counts.len(), ClientState::ALL.len());
    assert_eq!(counts[&ClientState::Running], 3);
    assert_eq!(counts[&ClientState::Failed], 2);
    assert_eq!(counts[&ClientState::Stopped], 0);
}

async fn pagination_walks_every_client_exactly_once_with_and_without_filters(db: &TestDb) {
    let store = db.open().await;
    let states = [
        ClientState::Running,
        ClientState::Stopped,
        ClientState::Degraded,
        ClientState::Running,
    ];
    let mut all = Vec::new();
    // Inserted out of id order, so the walk cannot rely on insertion order.
    for n in (0..47u32).map(|n| (n * 29) % 47) {
        let plan = PLANS[n as usize % 3];
        let state = states[n as usize % states.len()];
        all.push(add_client(&store, n, plan, state).await);
    }
    let filters = [
        ClientFilter::default(),
        ClientFilter {
            state: Some(ClientState::Running),
            plan: None,
        },
        ClientFilter {
            state: None,
            plan: Some(Plan::Enterprise),
        },
        ClientFilter {
            state: Some(ClientState::Stopped),
            plan: Some(Plan::Starter),
        },
        ClientFilter {
            state: Some(ClientState::Absent),
            plan: None,
        },
    ];
    for filter in filters {
        let mut expected: Vec<_> = all
            .iter()
            .filter(|c| filter.state.is_none_or(|s| c.state == s))
            .filter(|c| filter.plan.is_none_or(|p| c.plan == p))
            .map(|c| c.id.clone())
            .collect();
        expected.sort();
        for page_size in [1, 5, 7, 500] {
            let mut seen = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store
                    .list_clients(filter, after.as_ref(), page_size)
                    .await
                    .unwrap();
                pages += 1;
                assert!(page.clients.len() <= page_size as usize);
                for client in &page.clients {
                    assert!(filter.state.is_none_or(|s| client.state == s));
                    assert!(filter.plan.is_none_or(|p| client.plan == p));
                }
                seen.extend(page.clients.iter().map(|c| c.id.clone()));
                match page.next {
                    Some(next) => {
                        assert_eq!(Some(&next), page.clients.last().map(|c| &c.id));
                        after = Some(next);
                    }
                    None => break,
                }
                assert!(pages <= 100, "pagination does not end");
            }
            let ordered_ids: Vec<String> = seen.iter().map(|id| id.to_string()).collect();
            let mut sorted = ordered_ids.clone();
            sorted.sort();
            assert_eq!(ordered_ids, sorted, "pages come in id order");
            assert_eq!(seen, expected, "{filter:?}, pages of {page_size}");
            // A full last page is still known to be the last (no empty extra request).
            assert_eq!(pages, expected.len().div_ceil(page_size as usize).max(1));
        }
    }
}

async fn a_page_limit_of_zero_is_refused_and_large_limits_are_capped(db: &TestDb) {
    let store = db.open().await;
    let error = store
        .list_clients(ClientFilter::default(), None, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidLimit { limit: 0 }),
        "{error:?}"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..MAX_PAGE_LIMIT + 3 {
        let store = store.clone();
        tasks.spawn(async move { add_client(&store, n, "starter", ClientState::Running).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let page = store
        .list_clients(ClientFilter::default(), None, u32::MAX)
        .await
        .unwrap();
    assert_eq!(page.clients.len(), MAX_PAGE_LIMIT as usize);
    let rest = store
        .list_clients(ClientFilter::default(), page.next.as_ref(), u32::MAX)
        .await
        .unwrap();
    assert_eq!(rest.clients.len(), 3);
    assert_eq!(rest.next, None);
}

async fn deleting_a_client_removes_its_secrets_tokens_and_deployments(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let doomed = add_client(&store, 1, "starter", ClientState::Running).await;
    let kept = add_client(&store, 2, "starter", ClientState::Running).await;
    for client in [&doomed, &kept] {
        let mut secrets = Secrets::new();
        secrets.insert(SecretKey::AdminPassword, "Adm1nPassw0rdXyz".to_string());
        store.put_secrets(&client.id, &secrets, &key).await.unwrap();
        store
            .create_token(TokenRole::Client, Some(&client.id))
            .await
            .unwrap();
        let deployment = store
            .create_deployment(
                &client.id,
                DeploymentKind::Create,
                &["render", "containers"],
            )
            .await
            .unwrap();
        store
            .finish_deployment(
                &deployment.id,
                DeploymentStatus::Failed,
                Some("engine unreachable"),
            )
            .await
            .unwrap();
    }
    store.delete_client(&doomed.id).await.unwrap();
    assert_eq!(store.client(&doomed.id).await.unwrap(), None);
    assert_eq!(store.get_secrets(&doomed.id, &key).await.unwrap(), None);
    assert!(store
        .deployments_of_client(&doomed.id, 10)
        .await
        .unwrap()
        .is_empty());
    let token_owners: BTreeSet<_> = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t.client_id)
        .collect();
    assert_eq!(token_owners, BTreeSet::from([kept.id.clone()]));
    // Foreign keys are on, so the cascade reached the steps too.
    assert_eq!(
        db.raw_integer("SELECT COUNT(*) FROM deployment_steps")
            .await,
        2
    );
    assert!(store.get_secrets(&kept.id, &key).await.unwrap().is_some());
    let error = store.delete_client(&doomed.id).await.unwrap_err();
    assert!(
        matches!(error, StoreError::ClientNotFound { .. }),
        "{error:?}"
    );
}

async fn deleting_a_client_with_an_unfinished_deployment_is_refused(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let deployment = store
        .create_deployment(&client.id, DeploymentKind::Destroy, &["containers"])
        .await
        .unwrap();
    let error = store.delete_client(&client.id).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientBusy { deployment: busy, .. } if *busy == deployment.id),
        "{error:?}"
    );
    assert!(store.client(&client.id).await.unwrap().is_some());
    store
        .mark_step_running(&deployment.id, "containers")
        .await
        .unwrap();
    store
        .mark_step_succeeded(&deployment.id, "containers", None)
        .await
        .unwrap();
    store
        .finish_deployment(&deployment.id, DeploymentStatus::Succeeded, None)
        .await
        .unwrap();
    store.delete_client(&client.id).await.unwrap();
}

async fn updating_a_configuration_replaces_it_and_keeps_the_clients_state(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let neighbour = add_client(&store, 2, "starter", ClientState::Running).await;
    store
        .set_client_state(&client.id, ClientState::Degraded, Some("calcom unhealthy"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // A plan change, as a subscription update makes it.
    let upgraded = spec("Client 1 Renamed", "client1.example.com", "enterprise");
    let record = store
        .update_client_spec(&client.id, &upgraded)
        .await
        .unwrap();
    assert_eq!(record.plan, Plan::Enterprise);
    assert_eq!(record.company_name.as_str(), "Client 1 Renamed");
    assert_eq!(record.spec_toml, upgraded.to_toml(&client.id));
    assert_eq!(record.state, ClientState::Degraded);
    assert_eq!(record.state_reason.as_deref(), Some("calcom unhealthy"));
    assert_eq!(record.created_at, client.created_at);
    assert!(record.updated_at > client.updated_at);
    assert_eq!(store.client(&client.id).await.unwrap(), Some(record));
    let filtered = store
        .list_clients(
            ClientFilter {
                plan: Some(Plan::Enterprise),
                ..ClientFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(filtered.clients.len(), 1);
    // Another client's domain, another id, or no client at all: refused, nothing changed.
    let error = store
        .update_client_spec(
            &client.id,
            &spec("Client 1", neighbour.domain.as_str(), "starter"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::DomainTaken { owner, .. } if *owner == neighbour.id),
        "{error:?}"
    );
    let mut pinned = spec("Client 1", "client1.example.com", "starter");
    pinned.client_id = Some(neighbour.id.clone());
    assert!(matches!(
        store.update_client_spec(&client.id, &pinned).await,
        Err(StoreError::ClientIdMismatch { .. })
    ));
    let missing = client_id("missing", 3);
    assert!(matches!(
        store.update_client_spec(&missing, &upgraded).await,
        Err(StoreError::ClientNotFound { client }) if client == missing
    ));
    assert_eq!(
        store.client(&client.id).await.unwrap().unwrap().plan,
        Plan::Enterprise
    );
}

async fn clients_redirecting_a_previous_domain_are_found_by_it_and_only_by_it(db: &TestDb) {
    let store = db.open().await;
    let moved = stackbox_core::client::ClientSpec::from_toml(
        "company_name = \"Moved\"\ndomain = \"new.example.com\"\nplan = \"starter\"\n\
         admin_email = \"o@new.example.com\"\n\n[[previous_domains]]\n\
         domain = \"old.example.com\"\nuntil = \"2027-03-01\"\n",
    )
    .unwrap();
    let id = crate::harness::client_id("moved", 1);
    store
        .insert_client(&id, &moved, ClientState::Running)
        .await
        .unwrap();
    let old = stackbox_core::client::Domain::parse("old.example.com").unwrap();
    let found = store.clients_redirecting(&old).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    add_client(&store, 2, "starter", ClientState::Running).await;
    let with: Vec<_> = store
        .clients_with_previous_domains()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        with,
        std::slice::from_ref(&id),
        "only the client with previous domains"
    );
    // Its current domain is not a redirect; a domain that only contains the old one is not it.
    for other in ["new.example.com", "example.com", "sub.old.example.com"] {
        let domain = stackbox_core::client::Domain::parse(other).unwrap();
        assert!(
            store.clients_redirecting(&domain).await.unwrap().is_empty(),
            "{other}"
        );
    }
}
