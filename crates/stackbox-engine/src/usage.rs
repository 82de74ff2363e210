//! Reading resource use from the engine: one-shot stats of every running client container,
//! the bytes in a client's volumes, and how full the engine's disk is. No agent runs in a
//! client's stack; the engine already counts all of it.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::StreamExt;
use stackbox_core::client::ClientId;
use stackbox_core::deploy::ContainerState;
use stackbox_core::usage::ContainerSample;

use crate::runtime::ContainerRuntime;
use crate::EngineError;

/// One reading of every running StackBox container (or only `client`'s), by client id. At
/// most `concurrency`
/// stats requests are in flight at once (each is one short request to the engine); a
/// container that went away between the list and its reading is left out.
pub async fn read_all<R: ContainerRuntime>(
    runtime: &R,
    client: Option<&ClientId>,
    host_memory: Option<u64>,
    concurrency: usize,
) -> Result<BTreeMap<String, Vec<ContainerSample>>, EngineError> {
    let containers = runtime.list_client_containers(client).await?;
    let running = containers.into_iter().filter(|(client, container)| {
        container.state == ContainerState::Running
            && !container.is_set_aside()
            && container.service.is_some()
            && ClientId::parse(client).is_ok()
    });
    let readings = futures_util::stream::iter(running.map(|(client, container)| async move {
        let service = container.service.clone().unwrap_or_default();
        let sample = runtime
            .container_stats(&container.id, &service, host_memory)
            .await;
        (client, sample)
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    let mut by_client: BTreeMap<String, Vec<ContainerSample>> = BTreeMap::new();
    for (client, sample) in readings {
        if let Ok(sample) = sample {
            by_client.entry(client).or_default().push(sample);
        }
    }
    Ok(by_client)
}

/// Bytes in each of the client's volumes (the disk blocks their files take), measured where
/// the engine keeps them. Only a local engine's volumes can be measured this way: on another
/// host (or without permission to read the engine's data root) a volume is left out.
pub async fn volume_sizes<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
) -> Result<BTreeMap<String, u64>, EngineError> {
    let observed = runtime.observe(client).await?;
    let mut sizes = BTreeMap::new();
    for volume in observed.volumes {
        let Some(mountpoint) = runtime.volume_mountpoint(&volume).await? else {
            continue;
        };
        let measured = tokio::task::spawn_blocking(move || directory_bytes(Path::new(&mountpoint)))
            .await
            .ok()
            .flatten();
        if let Some(bytes) = measured {
            sizes.insert(volume, bytes);
        }
    }
    Ok(sizes)
}

/// The disk blocks a directory tree takes (as `du` counts them; hard links once per visit,
/// symbolic links not followed). `None` when the directory cannot be read at all.
pub fn directory_bytes(root: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = std::fs::symlink_metadata(root).ok()?.blocks() * 512;
    let mut pending = vec![root.to_path_buf()];
    std::fs::read_dir(root).ok()?;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            total += metadata.blocks() * 512;
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Some(total)
}

/// Used and total bytes of the filesystem holding `path` (the engine's data root), when it
/// is on this host.
pub fn filesystem_usage(path: &Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    (total > 0).then(|| (total.saturating_sub(free), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_tree_counts_the_blocks_of_every_file_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), vec![7u8; 100_000]).unwrap();
        let bytes = directory_bytes(dir.path()).unwrap();
        assert!(bytes >= 100_000, "{bytes}");
        assert!(directory_bytes(&dir.path().join("absent")).is_none());
    }

    #[test]
    fn the_filesystem_of_a_path_has_a_size_and_uses_part_of_it() {
        let (used, total) = filesystem_usage(Path::new("/")).unwrap();
        assert!(total > 0 && used <= total);
    }
}
