//! Trace context of a folder job: a worker's `worker.job` span becomes a child of the
//! span that published the job (the scheduler's), whatever queue carried it (the queue
//! adapters move the W3C `traceparent`/`tracestate` pairs). A no-op without a tracer.

use opentelemetry::propagation::Extractor;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the context a carrier (W3C header pairs) holds.
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
