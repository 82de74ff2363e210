//! Limits of the local engine's host that containers cannot exceed.
//!
//! A container's open-file limit is set by the engine's runtime, a child of `dockerd`: asking
//! for more than the daemon's own hard limit fails the start ("error setting rlimit type 7:
//! operation not permitted") in a sandbox where even root cannot raise it. StackBox reads the
//! daemon's limit and caps what services ask for, instead of failing a newcomer's first deploy.

use std::path::Path;

/// The hard open-file limit of the local `dockerd` (the lowest, if several run), when the
/// engine is local (`DOCKER_HOST` unset or a unix socket) and its process can be read.
pub fn local_daemon_open_files() -> Option<u64> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    if !(host.is_empty() || host.starts_with("unix://")) {
        return None;
    }
    daemon_open_files_in(Path::new("/proc"))
}

fn daemon_open_files_in(proc: &Path) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() != "dockerd" {
            continue;
        }
        let limits = std::fs::read_to_string(entry.path().join("limits")).unwrap_or_default();
        if let Some(hard) = hard_open_files(&limits) {
            lowest = Some(lowest.map_or(hard, |l| l.min(hard)));
        }
    }
    lowest
}

/// The hard limit of `Max open files` in a `/proc/PID/limits` text (`None` when unlimited).
pub fn hard_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    fields.get(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 20000                files     \n\
        Max processes             unlimited            unlimited            processes \n";

    #[test]
    fn the_hard_open_files_limit_is_read_from_proc_limits() {
        assert_eq!(hard_open_files(LIMITS), Some(20000));
        assert_eq!(
            hard_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(hard_open_files("nothing here"), None);
    }

    #[test]
    fn the_lowest_limit_of_every_dockerd_process_is_taken_and_others_ignored() {
        let proc = tempfile::tempdir().unwrap();
        for (pid, comm, hard) in [
            ("10", "dockerd", 50000),
            ("11", "dockerd", 20000),
            ("12", "nginx", 10),
        ] {
            let dir = proc.path().join(pid);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(
                dir.join("limits"),
                LIMITS.replace("20000", &hard.to_string()),
            )
            .unwrap();
        }
        std::fs::create_dir(proc.path().join("self")).unwrap();
        assert_eq!(daemon_open_files_in(proc.path()), Some(20000));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(daemon_open_files_in(empty.path()), None);
    }
}
