//! W3C trace context across RabbitMQ: the current span's context goes into a job
//! message's headers on publish and comes back out on consume, so a worker's spans are
//! children of the scheduler's. A no-op when no tracer is installed.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's context as W3C headers (`traceparent`, `tracestate`).
pub fn current() -> Vec<(String, String)> {
    struct Carrier(HashMap<String, String>);
    impl Injector for Carrier {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }
    let cx = tracing::Span::current().context();
    let mut c = Carrier(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut c));
    let mut v: Vec<(String, String)> = c.0.into_iter().collect();
    v.sort();
    v
}

/// Adds trace headers to a message's header table.
pub fn insert(headers: &mut FieldTable, carrier: &[(String, String)]) {
    for (k, v) in carrier {
        headers.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(LongString::from(v.as_str())),
        );
    }
}

/// Reads trace headers back from a delivered message.
pub fn extract(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(h) = headers else {
        return Vec::new();
    };
    ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| match h.inner().get(*k) {
            Some(AMQPValue::LongString(s)) => Some((k.to_string(), s.to_string())),
            Some(AMQPValue::ShortString(s)) => Some((k.to_string(), s.to_string())),
            _ => None,
        })
        .collect()
}

/// Makes `span` a child of the context a carrier holds.
pub fn adopt(span: &tracing::Span, carrier: &[(String, String)]) {
    struct Carrier<'a>(&'a [(String, String)]);
    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }
    if carrier.is_empty() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Carrier(carrier)));
    let _ = span.set_parent(cx);
}

/// The trace id of a span (hex), once a tracer is installed; for log lines.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
