//! W3C trace context (`traceparent`), carried in AMQP headers so that one
//! trace follows a message from the gateway through the responder and back.

use std::fmt;
use uuid::Uuid;

/// AMQP header carrying the trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// `00-<trace id>-<parent span id>-<flags>`: which trace a message belongs
/// to and which span sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
}

/// A trace id, as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn random_span_id() -> u64 {
    // 64 random bits; never zero (zero is invalid in W3C trace context).
    (Uuid::new_v4().as_u128() as u64).max(1)
}

impl TraceParent {
    /// The start of a new trace.
    pub fn new_root() -> Self {
        Self {
            trace_id: Uuid::new_v4().as_u128().max(1),
            span_id: random_span_id(),
        }
    }

    /// A span of the same trace, sent by the current one.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: random_span_id(),
        }
    }

    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// From raw ids (e.g. a tracing system's); `None` if either is zero.
    pub fn from_parts(trace_id: u128, span_id: u64) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(Self { trace_id, span_id })
    }

    /// The raw ids: trace, and the span that sent the message.
    pub fn parts(&self) -> (u128, u64) {
        (self.trace_id, self.span_id)
    }

    /// Parses a `traceparent` value; `None` for anything malformed.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self { trace_id, span_id })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_children_share_the_trace() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child, root);
        assert_eq!(root.to_string().len(), 55);
    }

    #[test]
    fn reads_the_w3c_example_and_refuses_malformed_values() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(example).unwrap();
        assert_eq!(
            parsed.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
