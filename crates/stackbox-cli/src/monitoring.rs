//! The monitor's figures as the API shows them: conversions from the control plane's usage
//! readings and probes to the API's views, and `stackbox status ID --resources`.

use stackbox_api::{ClientUsageView, ServiceUsageView, Timestamp, UsagePointView};
use stackbox_core::usage::ServiceUsage;

pub fn service_view(service: &ServiceUsage) -> ServiceUsageView {
    let sample = &service.sample;
    ServiceUsageView {
        service: sample.service.clone(),
        cpu_cores: service.cpu_cores,
        cpu_seconds_total: sample.cpu_seconds_total,
        memory_working_set_bytes: sample.memory_working_set_bytes,
        memory_limit_bytes: sample.memory_limit_bytes,
        network_receive_bytes_total: sample.network_receive_bytes_total,
        network_transmit_bytes_total: sample.network_transmit_bytes_total,
        block_read_bytes_total: sample.block_read_bytes_total,
        block_write_bytes_total: sample.block_write_bytes_total,
    }
}

pub fn usage_view(usage: stackbox_control::ClientUsage, window_seconds: u64) -> ClientUsageView {
    let window = usage.window;
    ClientUsageView {
        client_id: usage.client_id,
        window_seconds,
        interval_seconds: usage.interval_seconds,
        kept_seconds: usage.kept_seconds,
        cpu_cores_avg: window.cpu_cores_avg,
        cpu_cores_max: window.cpu_cores_max,
        memory_working_set_bytes_max: window.memory_working_set_bytes_max,
        storage_bytes: (!window.volumes.is_empty()).then(|| window.volumes.values().sum()),
        points: window
            .points
            .iter()
            .map(|point| UsagePointView {
                at: Timestamp::from_unix_millis(point.at.saturating_mul(1000)),
                cpu_cores: point.cpu_cores,
                memory_working_set_bytes: point.memory_working_set_bytes,
                network_receive_bytes_per_second: point.network_receive_bytes_per_second,
                network_transmit_bytes_per_second: point.network_transmit_bytes_per_second,
                block_read_bytes_per_second: point.block_read_bytes_per_second,
                block_write_bytes_per_second: point.block_write_bytes_per_second,
                storage_bytes: point.storage_bytes,
            })
            .collect(),
        services: window.services.iter().map(service_view).collect(),
        volumes: window.volumes,
    }
}

/// Bytes as people read them (binary units, one decimal).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A whole number of days, hours, minutes or seconds (`6h`, `90m`).
fn duration_text(seconds: u64) -> String {
    match seconds {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `status --resources`: the window's summary, then one line per service.
pub fn print_usage(usage: &ClientUsageView) {
    println!(
        "Resources over the last {} (a reading every {} s; {} point(s)):",
        duration_text(usage.window_seconds),
        usage.interval_seconds,
        usage.points.len()
    );
    println!(
        "  CPU {:.2} cores on average, {:.2} at most; memory at most {}; storage {}",
        usage.cpu_cores_avg,
        usage.cpu_cores_max,
        human_bytes(usage.memory_working_set_bytes_max),
        usage
            .storage_bytes
            .map_or_else(|| "not measured yet".to_string(), human_bytes)
    );
    if usage.services.is_empty() {
        if usage.points.is_empty() {
            println!("  No reading yet: the first comes one interval after `serve` starts.");
        } else {
            println!("  No service runs now (the client is stopped).");
        }
        return;
    }
    println!(
        "  {:<20} {:>7} {:>21} {:>12} {:>12}",
        "SERVICE", "CPU", "MEMORY (LIMIT)", "NET IN", "NET OUT"
    );
    for service in &usage.services {
        let memory = match service.memory_limit_bytes {
            Some(limit) => format!(
                "{} ({})",
                human_bytes(service.memory_working_set_bytes),
                human_bytes(limit)
            ),
            None => human_bytes(service.memory_working_set_bytes),
        };
        println!(
            "  {:<20} {:>7.2} {:>21} {:>12} {:>12}",
            service.service,
            service.cpu_cores,
            memory,
            human_bytes(service.network_receive_bytes_total),
            human_bytes(service.network_transmit_bytes_total)
        );
    }
    for (volume, bytes) in &usage.volumes {
        println!("  volume {volume}: {}", human_bytes(*bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
