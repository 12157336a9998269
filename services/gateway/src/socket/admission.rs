//! Socket admission: caps on open sockets per user and per gateway. A slot
//! is taken atomically when the upgrade is accepted and given back when the
//! socket ends, so a burst of simultaneous connects cannot overshoot.

use protocol::{ErrorCode, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Admission {
    max_per_user: usize,
    max_total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_user: HashMap<UserId, usize>,
}

/// One open socket's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    user: UserId,
}

impl Admission {
    pub fn new(max_per_user: usize, max_total: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_user,
            max_total,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for one more socket of `user`, or the code saying why not.
    pub fn admit(self: &Arc<Self>, user: &UserId) -> Result<Slot, ErrorCode> {
        let mut open = self.open.lock().expect("admission lock");
        if open.total >= self.max_total {
            return Err(ErrorCode::GatewayFull);
        }
        let mine = open.per_user.get(user).copied().unwrap_or(0);
        if mine >= self.max_per_user {
            return Err(ErrorCode::TooManySockets);
        }
        open.total += 1;
        open.per_user.insert(user.clone(), mine + 1);
        metrics::gauge!("switchboard_gateway_sockets_open").set(open.total as f64);
        Ok(Slot {
            admission: self.clone(),
            user: user.clone(),
        })
    }

    /// Sockets open on this gateway.
    pub fn open_sockets(&self) -> usize {
        self.open.lock().expect("admission lock").total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("admission lock");
        open.total -= 1;
        metrics::gauge!("switchboard_gateway_sockets_open").set(open.total as f64);
        if let Some(count) = open.per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_user_and_in_total_and_frees_on_drop() {
        let admission = Admission::new(2, 3);
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let a1 = admission.admit(&alice).unwrap();
        let _a2 = admission.admit(&alice).unwrap();
        assert_eq!(
            admission.admit(&alice).unwrap_err(),
            ErrorCode::TooManySockets
        );
        let _b1 = admission.admit(&bob).unwrap();
        assert_eq!(admission.admit(&bob).unwrap_err(), ErrorCode::GatewayFull);
        drop(a1);
        assert_eq!(admission.open_sockets(), 2);
        assert!(admission.admit(&alice).is_ok());
    }
}
