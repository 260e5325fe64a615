//! Logs, traces and metrics of a mailshift process.
//!
//! Logs: human-readable on a terminal, JSON lines otherwise (or with `--log-format`);
//! levels from `RUST_LOG`. Traces: exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with `OTEL_EXPORTER_OTLP_PROTOCOL`
//! `grpc`, `http/protobuf` (default) or `http/json`, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`; W3C trace context crosses RabbitMQ in message headers.
//! Metrics: a Prometheus `/metrics` endpoint with `--metrics-listen`.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::net::SocketAddr;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise
    #[default]
    Auto,
    Text,
    Json,
}

/// Flushes the trace exporter when dropped (at the end of `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: could not flush traces: {e}");
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

fn tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".into());
    let exporter = match protocol.trim() {
        "grpc" => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("cannot set up the OTLP/gRPC trace exporter")?,
        "http/json" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .build()
            .context("cannot set up the OTLP/HTTP (JSON) trace exporter")?,
        "http/protobuf" | "" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .context("cannot set up the OTLP/HTTP trace exporter")?,
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use grpc, http/protobuf or http/json"
        ),
    };
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the default detectors;
    // the command's own name is only the fallback.
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_string());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Sets up logging and (when configured) trace export for a process named `service`
/// (`mailshift-worker`, ...). `default` is the log level without `RUST_LOG`.
pub fn init(service: &str, default: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    // async-imap's trace output would contain the LOGIN line (with the password) and
    // message bodies, sqlx's the statements and the connection options: capped whatever
    // RUST_LOG says (the caps come last, so they win). sqlx reports PostgreSQL's NOTICEs
    // at info.
    let filter = || {
        EnvFilter::try_new(format!(
            "{base},sqlx=warn,sea_orm_migration=warn,async_imap=info,imap_proto=info,\
             lapin=info,amq_protocol=info,opentelemetry=warn,opentelemetry_sdk=warn,h2=warn,\
             tonic=warn,hyper=warn,reqwest=warn"
        ))
        .unwrap_or_else(|_| EnvFilter::new(default))
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (text_layer, json_layer) = if json {
        (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(Redacting),
            ),
        )
    } else {
        (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Redacting)
                    .with_target(false)
                    // Colours only for a person at a terminal, never into a file.
                    .with_ansi(std::io::stderr().is_terminal()),
            ),
            None,
        )
    };
    let provider = if otlp_configured() {
        Some(tracer_provider(service)?)
    } else {
        None
    };
    let otel_layer = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer().with_tracer(p.tracer("mailshift"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(text_layer)
        .with(json_layer)
        .with(otel_layer)
        .try_init();
    Ok(Telemetry { provider })
}

/// Log output with every `scheme://user:password@` turned into `scheme://user:***@`
/// before it reaches stderr, whatever crate logged it and at whatever level: the last
/// guard for a database or broker URL that some dependency prints.
struct Redacting;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Redacting {
    type Writer = RedactingLine;
    fn make_writer(&'a self) -> RedactingLine {
        RedactingLine(Vec::new())
    }
}

/// One log event, written out (redacted) when the formatter is done with it.
struct RedactingLine(Vec<u8>);

impl std::io::Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        let line = redact_urls(&line);
        let write = || {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        };
        // Above the progress bars while they are drawn, never inside one.
        match BARS.read().ok().as_deref().and_then(Option::as_ref) {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

/// The progress bars on the terminal, if any: log lines are printed above them.
static BARS: std::sync::RwLock<Option<indicatif::MultiProgress>> = std::sync::RwLock::new(None);

/// Log lines go above `bars` from now on (None: straight to stderr again).
pub fn log_above(bars: Option<indicatif::MultiProgress>) {
    if let Ok(mut b) = BARS.write() {
        *b = bars;
    }
}

/// `text` with the password of every `scheme://user:password@host` replaced by `***`.
pub fn redact_urls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        // The authority ends at a path, query, fragment, quote or space.
        let end = rest
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let colon = authority[..at].find(':').unwrap_or(at);
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Serves Prometheus metrics on `addr` (`GET /metrics`).
pub fn serve_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ])
        .context("invalid histogram buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    mailshift_engine::metrics::describe();
    Ok(())
}

/// Installs the Prometheus recorder without a listener of its own, for a server that
/// renders `/metrics` itself (`mailshift serve`); None if a recorder is already set.
pub fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok()?;
    mailshift_engine::metrics::describe();
    Some(handle)
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact_urls("connecting to postgres://app:s3cr%40t@db:5432/mailshift now"),
            "connecting to postgres://app:***@db:5432/mailshift now"
        );
        assert_eq!(
            redact_urls(r#"{"url":"amqp://guest:guest@127.0.0.1:5672/%2f","x":"imap://alice@h"}"#),
            r#"{"url":"amqp://guest:***@127.0.0.1:5672/%2f","x":"imap://alice@h"}"#
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(redact_urls("imaps://bob@h:993"), "imaps://bob@h:993");
    }
}
