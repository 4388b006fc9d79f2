//! Helpers shared by the storage tests.

use std::path::Path;

/// Waits, a bounded time, until the log file made ahead of time at `spare` is whole; having
/// waited, gives its maker time to sync it and hand it over (it is whole before it is synced).
pub fn wait_for_spare(spare: &Path, bytes: u64) {
    let whole = || std::fs::metadata(spare).is_ok_and(|m| m.len() == bytes);
    if whole() {
        return;
    }
    for _ in 0..500 {
        if whole() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(whole(), "a log file was made ahead of time");
    std::thread::sleep(std::time::Duration::from_millis(200));
}
