//! Seeds a control plane's store with N clients (benchmarks only): `seed_clients DATA_DIR N`.
//! Clients get varied plans and states; no secrets, no deployments, no containers.

use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_store::{ClientState, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: seed_clients DATA_DIR N");
        std::process::exit(2);
    };
    let count: u32 = count.parse()?;
    std::fs::create_dir_all(&dir)?;
    let store = Store::open_data_dir(std::path::Path::new(&dir)).await?;
    let plans = ["starter", "professional", "enterprise"];
    let states = [
        ClientState::Running,
        ClientState::Stopped,
        ClientState::Degraded,
    ];
    for n in 0..count {
        let plan = plans[(n % 3) as usize];
        let spec = ClientSpec::from_toml(&format!(
            "company_name = \"Seeded Client {n}\"\ndomain = \"seed{n}.example.com\"\nplan = \"{plan}\"\nadmin_email = \"owner@seed{n}.example.com\"\n"
        ))?;
        let id = ClientId::new(&spec.company_name, n);
        store
            .insert_client(&id, &spec, states[(n % 3) as usize])
            .await?;
    }
    println!("{count} clients in {dir}");
    Ok(())
}
