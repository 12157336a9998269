//! What a failing rooms database means for a caller, said in the log at
//! a bounded rate.

use crate::store::StoreError;
use protocol::ErrorCode;
use std::time::Duration;
use tracing::warn;

/// How often a failing rooms database is said in the log (a flood of
/// requests must not become a flood of log lines).
const STORE_WARN_EVERY: Duration = Duration::from_secs(10);

pub fn store_error(error: StoreError) -> ErrorCode {
    match error {
        StoreError::NoSuchRoom => ErrorCode::NotAMember,
        StoreError::IdTaken => ErrorCode::IdTaken,
        other => {
            static SAID: std::sync::Mutex<Option<(std::time::Instant, u64)>> =
                std::sync::Mutex::new(None);
            let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
            let since = said.get_or_insert((std::time::Instant::now() - STORE_WARN_EVERY, 0));
            since.1 += 1;
            if since.0.elapsed() >= STORE_WARN_EVERY {
                warn!(error = %other, failures = since.1, "rooms database failed");
                *since = (std::time::Instant::now(), 0);
            }
            ErrorCode::RoomsUnavailable
        }
    }
}
