//! Progress display: a bar for the study (steps, matches) and one for the current step (a
//! waiting spinner such as "2/3 humans", or the match clock). Off a terminal there are no bars:
//! step boundaries and state changes are plain log lines instead. After each measured match a
//! third line shows every player's planned against measured latency.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::logging;

pub struct Progress {
    study: Option<ProgressBar>,
    current: Option<ProgressBar>,
    /// Planned against measured latency of the last measured match; added on first use.
    latency: Option<ProgressBar>,
    total_steps: usize,
}

impl Progress {
    pub fn new(total_steps: usize) -> Self {
        let (study, current) = match logging::bars() {
            Some(multi) => {
                let study = multi.add(ProgressBar::new(total_steps as u64));
                study.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>7} [{bar:30}] {pos}/{len} steps  {elapsed_precise}  {msg}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                study.set_prefix("study");
                let current = multi.add(ProgressBar::new_spinner());
                current.enable_steady_tick(Duration::from_millis(200));
                (Some(study), Some(current))
            }
            None => (None, None),
        };
        Progress {
            study,
            current,
            latency: None,
            total_steps,
        }
    }

    /// Step `index` (0-based) starts.
    pub fn step(&self, index: usize, line: &str) {
        tracing::info!("step {}/{}: {line}", index + 1, self.total_steps);
        if let Some(b) = &self.study {
            b.set_position(index as u64);
            b.set_message(line.to_string());
        }
        self.idle();
    }

    /// Something is being waited for ("2/3 humans").
    pub fn waiting(&self, msg: &str) {
        if let Some(b) = &self.current {
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}  {elapsed}")
                    .expect("static template"),
            );
            b.set_message(msg.to_string());
        }
    }

    /// The match clock: `elapsed` of `total`.
    pub fn clock(&self, label: &str, elapsed: Duration, total: Duration) {
        if let Some(b) = &self.current {
            b.set_style(
                ProgressStyle::with_template("{prefix:>7} [{bar:30}] {msg}")
                    .expect("static template")
                    .progress_chars("#- "),
            );
            b.set_length(total.as_secs().max(1));
            b.set_position(elapsed.as_secs().min(total.as_secs()));
            b.set_prefix(label.to_string());
            b.set_message(format!("{}s / {}s", elapsed.as_secs(), total.as_secs()));
        }
    }

    /// The latency line (already escaped for the terminal), below the study bar.
    pub fn latency(&mut self, line: &str) {
        let (Some(multi), Some(study)) = (logging::bars(), &self.study) else {
            return;
        };
        let bar = self.latency.get_or_insert_with(|| {
            let b = multi.insert_after(study, ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{prefix:>7} {msg}").expect("static template"),
            );
            b.set_prefix("latency");
            b
        });
        bar.set_message(line.to_string());
    }

    fn idle(&self) {
        if let Some(b) = &self.current {
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
            b.set_message("");
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.study {
            b.set_position(self.total_steps as u64);
            b.finish();
        }
        if let Some(b) = &self.current {
            b.finish_and_clear();
        }
        if let Some(b) = &self.latency {
            b.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.current {
            b.finish_and_clear();
        }
    }
}
