//! How long `list_clients` takes for a page of 100 with 10,000 clients in the store.
//!
//! `cargo run --release -p stackbox-store --example list_clients_timing [DATABASE_URL]`
//!
//! Without an argument it fills a new SQLite store in a temporary directory; given a URL
//! (an empty database), it fills that one. Prints the time per page for a few query shapes.

use std::time::{Duration, Instant};

use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::plan::Plan;
use stackbox_store::{ClientFilter, ClientState, Store};

const CLIENTS: u32 = 10_000;
const PAGE: u32 = 100;
const ROUNDS: usize = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => dir.path().join("stackbox.db").display().to_string(),
    };
    let store = Store::open(&url).await?;
    let started = Instant::now();
    let states = [
        ClientState::Running,
        ClientState::Running,
        ClientState::Running,
        ClientState::Stopped,
        ClientState::Degraded,
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..CLIENTS {
        let store = store.clone();
        tasks.spawn(async move {
            let plan = ["starter", "professional", "enterprise"][n as usize % 3];
            let spec = ClientSpec::from_toml(&format!(
                "company_name = \"Client {n}\"\ndomain = \"client{n}.example.com\"\n\
                 plan = \"{plan}\"\nadmin_email = \"owner@example.com\"\n"
            ))?;
            let id = ClientId::parse(&format!("client-{:08x}", n.wrapping_mul(2_654_435_761)))?;
            store
                .insert_client(&id, &spec, states[n as usize % states.len()])
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        // Bounded, so the pool is not asked for 10,000 connections at once.
        while tasks.len() >= 16 {
            tasks
                .join_next()
                .await
                .transpose()?
                .transpose()
                .map_err(|e| e.to_string())?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e| e.to_string())?;
    }
    println!(
        "{:?}: inserted {CLIENTS} clients in {:.1} s",
        store.backend(),
        started.elapsed().as_secs_f64()
    );

    let middle = store
        .list_clients(ClientFilter::default(), None, 500)
        .await?
        .next;
    let shapes: [(&str, ClientFilter, Option<ClientId>); 4] = [
        ("first page, no filter", ClientFilter::default(), None),
        (
            "page after 500 clients, no filter",
            ClientFilter::default(),
            middle.clone(),
        ),
        (
            "state = running",
            ClientFilter {
                state: Some(ClientState::Running),
                plan: None,
            },
            middle.clone(),
        ),
        (
            "state = stopped and plan = enterprise",
            ClientFilter {
                state: Some(ClientState::Stopped),
                plan: Some(Plan::Enterprise),
            },
            None,
        ),
    ];
    for (name, filter, after) in shapes {
        let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
        let mut rows = 0;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let page = store.list_clients(filter, after.as_ref(), PAGE).await?;
            times.push(start.elapsed());
            rows = page.clients.len();
        }
        times.sort();
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{name:<40} {rows:>3} rows: p50 {:>6.0} µs, p99 {:>6.0} µs, max {:>6.0} µs",
            micros(times[ROUNDS / 2]),
            micros(times[ROUNDS * 99 / 100]),
            micros(times[ROUNDS - 1])
        );
    }
    store.close().await;
    Ok(())
}
