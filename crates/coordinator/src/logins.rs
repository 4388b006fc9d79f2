//! Failed client logins, rate limited per client address, and the login metric.

use crate::users::Api;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Addresses whose failures are remembered; past it the forgiven are forgotten first.
const THROTTLED_ADDRESSES_MAX: usize = 65_536;

/// Rate limits failed logins per client address (a token bucket each: a burst of
/// `login_failures_burst`, then `login_failures_per_minute`), so passwords cannot be guessed
/// at speed; a throttled attempt is refused without being checked.
pub struct LoginThrottle {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
    attempts: prometheus_client::metrics::family::Family<
        Vec<(&'static str, &'static str)>,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl LoginThrottle {
    /// A throttle whose metric `ringkv_auth_logins{api, outcome}` is registered in `registry`.
    pub fn new(
        registry: &mut prometheus_client::registry::Registry,
        burst: u32,
        per_minute: u32,
    ) -> Self {
        let attempts = prometheus_client::metrics::family::Family::default();
        registry.register(
            "ringkv_auth_logins",
            "Client logins by API and outcome (accepted, refused, throttled)",
            attempts.clone(),
        );
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
            attempts,
        }
    }

    /// Lets a login from `peer` be checked, or `Err(wait)` if the address has failed too
    /// often and must wait (counted as throttled).
    pub fn admit(
        &self,
        api: Api,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(), std::time::Duration> {
        let Some(ip) = peer else { return Ok(()) };
        let now = std::time::Instant::now();
        let tokens = match self.buckets.lock().get(&ip) {
            Some(&(tokens, at)) => self.refill(tokens, at, now),
            None => return Ok(()),
        };
        if tokens >= 1.0 {
            return Ok(());
        }
        self.count(api, "throttled");
        Err(std::time::Duration::from_secs_f64(
            (1.0 - tokens) / self.per_second,
        ))
    }

    /// Counts a checked login; a refusal spends one of `peer`'s allowed failures.
    pub fn record(&self, api: Api, peer: Option<std::net::IpAddr>, accepted: bool) {
        self.count(api, if accepted { "accepted" } else { "refused" });
        let (false, Some(ip)) = (accepted, peer) else {
            return;
        };
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= THROTTLED_ADDRESSES_MAX {
            buckets.retain(|_, (tokens, at)| self.refill(*tokens, *at, now) < self.burst);
            if buckets.len() >= THROTTLED_ADDRESSES_MAX {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (self.refill(*tokens, *at, now) - 1.0).max(0.0);
        *at = now;
    }

    fn count(&self, api: Api, outcome: &'static str) {
        self.attempts
            .get_or_create(&vec![("api", api.label()), ("outcome", outcome)])
            .inc();
    }

    /// What a bucket holding `tokens` at `at` holds at `now`.
    fn refill(&self, tokens: f64, at: std::time::Instant, now: std::time::Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_fails_too_often_waits_and_others_do_not() {
        let throttle = LoginThrottle::new(&mut Default::default(), 10, 60);
        let (guesser, other) = (Some([10, 0, 0, 1].into()), Some([10, 0, 0, 2].into()));
        let mut refused = 0;
        for _ in 0..2000 {
            match throttle.admit(Api::Resp, guesser) {
                Ok(()) => throttle.record(Api::Resp, guesser, false),
                Err(wait) => {
                    assert!(wait <= std::time::Duration::from_secs(1));
                    refused += 1;
                }
            }
        }
        assert!(
            refused >= 1980,
            "only {refused} of 2000 guesses were refused"
        );
        assert!(
            throttle.admit(Api::Resp, other).is_ok(),
            "another address is not held up"
        );
        assert!(
            throttle.admit(Api::Resp, None).is_ok(),
            "in-process callers are not throttled"
        );
    }
}
