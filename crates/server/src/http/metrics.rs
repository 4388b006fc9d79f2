//! Per-operation request counts and latency histograms of the REST API.

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The operation, e.g. `put`.
    pub operation: &'static str,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation, e.g. `put`.
    pub operation: &'static str,
}

/// The REST API's metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
}

impl HttpMetrics {
    /// Creates and registers the metrics (prefix `ringkv_http_`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
        };
        let http = registry.sub_registry_with_prefix("ringkv_http");
        http.register(
            "requests",
            "REST requests by operation and status",
            metrics.requests.clone(),
        );
        http.register(
            "request_seconds",
            "REST request latency by operation",
            metrics.latency.clone(),
        );
        metrics
    }

    /// Records one finished request.
    pub fn record(&self, operation: &'static str, status: StatusCode, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                operation,
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// The operation name of a request, from its method and matched route.
pub fn operation(method: &Method, route: Option<&str>) -> &'static str {
    match (method, route) {
        (&Method::GET, Some("/v1/keys/{key}" | "/v1/ks/{keyspace}/keys/{key}")) => "get",
        (&Method::PUT, Some("/v1/keys/{key}" | "/v1/ks/{keyspace}/keys/{key}")) => "put",
        (&Method::DELETE, Some("/v1/keys/{key}" | "/v1/ks/{keyspace}/keys/{key}")) => "delete",
        (&Method::GET, Some("/v1/keys" | "/v1/ks/{keyspace}/keys")) => "list",
        (_, Some("/v1/ks" | "/v1/ks/{keyspace}")) => "keyspace",
        (_, Some("/metrics")) => "metrics",
        (_, Some("/v1/cluster")) => "cluster",
        (_, Some("/healthz")) => "healthz",
        _ => "other",
    }
}
