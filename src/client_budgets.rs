//! Per-client budgets for replayed history over REST and SSE, keyed by the client's
//! address (WebSocket connections have their own, per connection).
//!
//! `GET /rooms/{room}/history` and a room's SSE stream resumed with `Last-Event-ID` both copy
//! history out of the broker; each client may copy `REPLAY_BYTES_BURST` at once and
//! `REPLAY_BYTES_PER_SEC` after that. The table of clients is bounded
//! ([`MAX_TRACKED_CLIENTS`]): when it is full, clients whose budget is whole again are
//! forgotten first, and if none is, the table starts over.
//!
//! Clients are told apart by their address as the server sees it: behind a proxy, every
//! client shares the proxy's budget, so a deployment behind one sets the budget higher.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use courier_actors::rate_limit::SharedBucket;

/// Most clients whose budget is remembered at once.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Budgets by client address.
pub struct ClientBudgets {
    rate: f64,
    burst: f64,
    budgets: Mutex<HashMap<IpAddr, SharedBucket>>,
}

impl ClientBudgets {
    /// `rate` bytes per second and `burst` at once, per client.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            budgets: Mutex::default(),
        }
    }

    /// The budget of the client at `ip`.
    pub fn of(&self, ip: Option<IpAddr>) -> SharedBucket {
        let ip = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = budgets.get(&ip) {
            return budget.clone();
        }
        if budgets.len() >= MAX_TRACKED_CLIENTS {
            let burst = self.burst;
            budgets.retain(|_, b| b.with(|b| !b.is_full(burst)));
            if budgets.len() >= MAX_TRACKED_CLIENTS {
                budgets.clear();
            }
        }
        budgets
            .entry(ip)
            .or_insert_with(|| SharedBucket::new(self.rate, self.burst))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_budget() {
        let budgets = ClientBudgets::new(1024, 4096);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        budgets.of(a).with(|bucket| bucket.charge(10_000.0));
        assert!(!budgets.of(a).with(|bucket| bucket.has_tokens()));
        assert!(budgets.of(b).with(|bucket| bucket.has_tokens()));
    }
}
