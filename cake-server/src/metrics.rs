//! Prometheus metrics at `GET /metrics`.

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The control plane's metrics.
pub struct Metrics {
    registry: Registry,
    /// HTTP responses by status class.
    pub http_responses: IntCounterVec,
    /// Open event-stream observers.
    pub observers: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        // Construction fails only for invalid names; these are constants.
        let http_responses =
            IntCounterVec::new(Opts::new("cake_http_responses_total", "HTTP responses by status class"), &["class"])
                .expect("valid metric");
        let observers = IntGauge::new("cake_event_observers", "Open session event streams").expect("valid metric");
        let registry = Registry::new();
        let _ = registry.register(Box::new(http_responses.clone()));
        let _ = registry.register(Box::new(observers.clone()));
        Self { registry, http_responses, observers }
    }
}

impl Metrics {
    /// Counts one response.
    pub fn observe(&self, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_responses.with_label_values(&[class]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
