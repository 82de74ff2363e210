//! Progress of long operations: a line per service with a spinner on a terminal, one JSON
//! object per line with `--json`, plain lines otherwise (logs, CI).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stackbox_engine::lifecycle::{Event, Phase};

pub enum Progress {
    Json,
    Terminal {
        bars: MultiProgress,
        lines: RefCell<BTreeMap<String, ProgressBar>>,
    },
    Plain,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        if json {
            Progress::Json
        } else if std::io::stderr().is_terminal() {
            Progress::Terminal {
                bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                lines: RefCell::new(BTreeMap::new()),
            }
        } else {
            Progress::Plain
        }
    }

    pub fn event(&self, event: Event) {
        match self {
            Progress::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    println!("{line}");
                }
            }
            Progress::Plain => match &event {
                Event::Plan {
                    client,
                    create,
                    replace,
                    start,
                    unchanged,
                } => eprintln!(
                    "{client}: create {}, replace {}, start {}, unchanged {}",
                    create.len(),
                    replace.len(),
                    start.len(),
                    unchanged.len()
                ),
                Event::Service {
                    service,
                    phase,
                    detail,
                } => match detail {
                    Some(detail) => eprintln!("  {service:<20} {} ({detail})", label(*phase)),
                    None => eprintln!("  {service:<20} {}", label(*phase)),
                },
            },
            Progress::Terminal { bars, lines } => {
                let Event::Service {
                    service,
                    phase,
                    detail,
                } = event
                else {
                    return;
                };
                let mut lines = lines.borrow_mut();
                let bar = lines.entry(service.clone()).or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<20} {msg} {elapsed:>4}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(service.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                let message = match detail {
                    Some(detail) => format!("{} ({detail})", label(phase)),
                    None => label(phase).to_string(),
                };
                if phase.is_final() {
                    let mark = if phase == Phase::Failed { "✗" } else { "✓" };
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:<22} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(format!("{mark} {service}"));
                    bar.finish_with_message(message);
                } else {
                    bar.set_message(message);
                }
            }
        }
    }

    /// Stops every spinner (before printing the result).
    pub fn finish(&self) {
        if let Progress::Terminal { lines, .. } = self {
            for bar in lines.borrow().values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

fn label(phase: Phase) -> &'static str {
    match phase {
        Phase::Pulling => "checking image",
        Phase::Waiting => "waiting for dependencies",
        Phase::Creating => "creating",
        Phase::Starting => "starting",
        Phase::CheckingHealth => "waiting until healthy",
        Phase::Converging => "setting databases, users and passwords",
        Phase::Healthy => "healthy",
        Phase::Unchanged => "unchanged",
        Phase::Failed => "failed",
        Phase::RollingBack => "rolling back",
        Phase::Restored => "restored",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
        Phase::Removing => "removing",
        Phase::Removed => "removed",
    }
}
