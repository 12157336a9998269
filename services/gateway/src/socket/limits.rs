//! A socket's limits, read once from the gateway's settings.

use crate::rate::Rate;
use crate::settings::{RateLimitSettings, WebSocketSettings};
use protocol::ws::FrameLimits;
use std::time::Duration;

/// A socket's limits, from the gateway's settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest message text.
    pub frames: FrameLimits,
    /// Largest WebSocket message, in bytes (1009 beyond).
    pub max_message_bytes: usize,
    /// Reply frames buffered for the socket before it is cut loose (4000).
    pub outbound_buffer: usize,
    /// Sends awaiting their confirm before reading pauses.
    pub max_in_flight: usize,
    /// Bound on writing one frame.
    pub send_timeout: Duration,
    /// How often the gateway pings…
    pub ping_interval: Duration,
    /// …and how long it waits for any sign of life (4002).
    pub idle_timeout: Duration,
    /// The token bucket over client frames…
    pub rate: Rate,
    /// …and how many refusals in a row close the socket (1008).
    pub abuse_threshold: u32,
}

impl Limits {
    pub fn new(websocket: &WebSocketSettings, rate: &RateLimitSettings) -> Self {
        Self {
            frames: FrameLimits {
                max_text_chars: websocket.max_text_chars,
            },
            max_message_bytes: websocket.max_message_bytes,
            outbound_buffer: websocket.outbound_buffer,
            max_in_flight: websocket.max_in_flight.max(1),
            send_timeout: Duration::from_millis(websocket.send_timeout_ms),
            ping_interval: Duration::from_millis(websocket.ping_interval_ms),
            idle_timeout: Duration::from_millis(websocket.idle_timeout_ms),
            rate: Rate::from(rate),
            abuse_threshold: rate.abuse_threshold,
        }
    }
}
