//! Progress bars for push and pull: one bar for the total bytes and one per file in flight,
//! drawn on stderr only when it is a terminal (piped output stays quiet).

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of bars: the total, and one per active file.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// Bars for `total_bytes` of work labelled `label` (e.g. "uploading"); hidden when stderr
    /// is not a terminal.
    pub fn new(label: &str, total_bytes: u64) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(style(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ));
        total.set_message(label.to_owned());
        Self { multi, total }
    }

    /// Starts the next phase on the total bar.
    pub fn phase(&self, label: &str, total_bytes: u64) {
        self.total.reset();
        self.total.set_length(total_bytes);
        self.total.set_message(label.to_owned());
    }

    /// Adds `n` bytes to the total (for work without a per-file bar).
    pub fn inc(&self, n: u64) {
        self.total.inc(n);
    }

    /// A bar for one file; removed when dropped.
    pub fn file(&self, name: &str, size: u64) -> FileProgress {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(style("  [{bar:20}] {bytes:>10}/{total_bytes:<10} {wide_msg}"));
        bar.set_message(name.to_owned());
        FileProgress {
            bar,
            total: self.total.clone(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Prints a line above the bars (or plainly when hidden).
    pub fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Removes every bar.
    pub fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// One file's bar; also moves the total bar.
#[derive(Clone)]
pub struct FileProgress {
    bar: ProgressBar,
    total: ProgressBar,
    last: Arc<AtomicU64>,
}

impl FileProgress {
    /// Sets how many bytes of this file are done (may go back when a transfer restarts).
    pub fn set(&self, done: u64) {
        let before = self.last.swap(done, Ordering::Relaxed);
        if done >= before {
            self.total.inc(done - before);
        } else {
            self.total.dec(before - done);
        }
        self.bar.set_position(done);
    }

    /// Marks the file complete at `size` bytes.
    pub fn done(&self, size: u64) {
        self.set(size);
        self.bar.finish_and_clear();
    }

    /// A callback for the client's upload progress.
    pub fn callback(&self) -> ballast_client::ProgressFn {
        let this = self.clone();
        Arc::new(move |n| this.set(n))
    }
}

impl Drop for FileProgress {
    fn drop(&mut self) {
        if Arc::strong_count(&self.last) == 1 {
            self.bar.finish_and_clear();
        }
    }
}
