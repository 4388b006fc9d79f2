//! Helpers shared by the replica's test suites.

use prometheus_client::registry::Registry;

/// The value of metric `name` (the first sample line starting with it) in `registry`.
pub fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found"))
}
