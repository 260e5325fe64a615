//! The fleet's metrics, through the `metrics` facade (the binary decides where they go:
//! a Prometheus endpoint). Names follow Prometheus conventions; labels never carry a
//! user name, a password or message content.

use mailshift_core::ErrorKind;
use std::time::Duration;

pub const MESSAGES_COPIED: &str = "mailshift_messages_copied_total";
pub const BYTES_COPIED: &str = "mailshift_bytes_copied_total";
pub const JOBS: &str = "mailshift_jobs_total";
pub const JOB_SECONDS: &str = "mailshift_job_duration_seconds";
pub const ERRORS: &str = "mailshift_errors_total";
pub const PASS_LAG: &str = "mailshift_pass_lag_seconds";
pub const JOBS_PUBLISHED: &str = "mailshift_jobs_published_total";
pub const QUEUE_DEPTH: &str = "mailshift_queue_depth";

/// Registers descriptions (shown as `# HELP` lines).
pub fn describe() {
    metrics::describe_counter!(MESSAGES_COPIED, "Messages appended to destination servers");
    metrics::describe_counter!(
        BYTES_COPIED,
        "Bytes of messages appended to destination servers"
    );
    metrics::describe_counter!(JOBS, "Folder jobs finished, by outcome");
    metrics::describe_histogram!(JOB_SECONDS, "Duration of folder jobs");
    metrics::describe_counter!(
        ERRORS,
        "Errors by kind (auth, throttled, quota, too-large, network, ...)"
    );
    metrics::describe_gauge!(PASS_LAG, "How late the most overdue incremental pass is");
    metrics::describe_counter!(JOBS_PUBLISHED, "Folder jobs published by the scheduler");
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Folder jobs waiting in the queue (after a round)"
    );
    metrics::describe_histogram!(
        "mailshift_imap_command_duration_seconds",
        "Duration of IMAP commands, by command"
    );
    metrics::describe_gauge!(
        "mailshift_imap_connections",
        "Open IMAP connections, by server"
    );
}

pub fn copied(messages: u64, bytes: u64) {
    metrics::counter!(MESSAGES_COPIED).increment(messages);
    metrics::counter!(BYTES_COPIED).increment(bytes);
}

pub fn job_finished(outcome: &'static str, took: Duration) {
    metrics::counter!(JOBS, "outcome" => outcome).increment(1);
    metrics::histogram!(JOB_SECONDS, "outcome" => outcome).record(took.as_secs_f64());
}

pub fn error(kind: &ErrorKind) {
    metrics::counter!(ERRORS, "kind" => kind.as_str()).increment(1);
}
