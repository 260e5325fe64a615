//! W3C trace context across RabbitMQ: the current span's context goes into a job
//! message's headers on publish and comes back out on consume, so a worker's spans are
//! children of the scheduler's (the worker adopts them: `mailshift_engine::trace`). A
//! no-op when no tracer is installed.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::Injector;
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
