//! The `tracing` subscriber, installed once per process, and the link
//! between `tracing` spans and the W3C trace context messages carry.
//!
//! Built with the `otlp` feature and given `log.otlp_endpoint`, spans are
//! also exported over OTLP (HTTP/protobuf): each service's span joins the
//! trace of the message it handles, so a collector shows one trace per
//! message across gateway and responder.

use protocol::trace::TraceParent;
use serde::Deserialize;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// Default filter when `RUST_LOG` is unset, e.g. `info` or
    /// `info,gateway=debug`.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// OTLP/HTTP endpoint to export traces to, e.g.
    /// `http://otel-collector:4318/v1/traces`; empty: no export. Needs a
    /// build with the `otlp` feature.
    #[serde(default)]
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

fn filter(settings: &LogSettings) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// lapin logs `ERROR lapin::channels: Connection error … invalid channel
/// state: Closing` when the connection is closed while one of its channels
/// is still closing — which a stop races into now and then (2 of 6 clean
/// stops measured): the connection goes all the same, and the broker
/// requeues what was unacked as after any close. Once the process is
/// stopping, that line is not an error worth waking anyone for; before,
/// every lapin error is shown.
fn not_a_stop_artifact(meta: &tracing::Metadata<'_>) -> bool {
    !(crate::shutdown::has_begun()
        && *meta.level() == tracing::Level::ERROR
        && meta.target() == "lapin::channels")
}

/// Installs the global subscriber for `service` (its name in exported
/// traces). `RUST_LOG` wins over `settings.level`. Calling it again (two
/// services in one process) keeps the first one.
pub fn init(settings: &LogSettings, service: &str) {
    // Colours only for a person at a terminal, never in files or pipelines.
    let ansi = std::io::stdout().is_terminal();
    let (text, json) = match settings.format {
        LogFormat::Text => (Some(tracing_subscriber::fmt::layer().with_ansi(ansi)), None),
        LogFormat::Json => (
            None,
            Some(tracing_subscriber::fmt::layer().json().flatten_event(true)),
        ),
    };
    let registry = tracing_subscriber::registry()
        .with(filter(settings))
        .with(tracing_subscriber::filter::filter_fn(not_a_stop_artifact))
        .with(text)
        .with(json)
        .with(otlp::layer(settings, service));
    // An error only means a subscriber is already installed.
    drop(registry.try_init());
    if !settings.otlp_endpoint.is_empty() && !cfg!(feature = "otlp") {
        tracing::warn!(
            "log.otlp_endpoint is set, but this build has no `otlp` feature: traces are not exported"
        );
    }
}

/// Flushes exported traces; call before the process exits.
pub fn shutdown() {
    otlp::shutdown();
}

/// A subscriber for tests: silent unless `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
    }
}

/// Starts a trace for a new message, handled in `span`; returns the trace
/// context to send with the message. With OTLP export on, the ids are the
/// exported span's own.
pub fn start_trace(span: &tracing::Span) -> TraceParent {
    otlp::own_context(span, None).unwrap_or_else(TraceParent::new_root)
}

/// Makes `span` part of the trace a message arrived with; returns the trace
/// context to send onwards (same trace, `span` as the parent).
pub fn continue_trace(span: &tracing::Span, incoming: &TraceParent) -> TraceParent {
    otlp::own_context(span, Some(incoming)).unwrap_or_else(|| incoming.child())
}

#[cfg(feature = "otlp")]
mod otlp {
    use super::LogSettings;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use protocol::trace::TraceParent;
    use std::sync::OnceLock;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    pub(super) fn layer<S>(
        settings: &LogSettings,
        service: &str,
    ) -> Option<impl tracing_subscriber::Layer<S>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        if settings.otlp_endpoint.is_empty() {
            return None;
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(&settings.otlp_endpoint)
            .build()
            .map_err(|e| {
                eprintln!(
                    "cannot set up OTLP export to {}: {e}",
                    settings.otlp_endpoint
                )
            })
            .ok()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder_empty()
                    .with_attribute(KeyValue::new("service.name", service.to_owned()))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("switchboard");
        let _ = PROVIDER.set(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub(super) fn shutdown() {
        if let Some(provider) = PROVIDER.get() {
            let _ = provider.shutdown();
        }
    }

    /// Joins `span` to `parent` (if any) and returns its exported ids, or
    /// `None` when spans are not exported.
    pub(super) fn own_context(
        span: &tracing::Span,
        parent: Option<&TraceParent>,
    ) -> Option<TraceParent> {
        if let Some(parent) = parent {
            let (trace, sender) = parent.parts();
            let remote = SpanContext::new(
                TraceId::from(trace),
                SpanId::from(sender),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(Context::new().with_remote_span_context(remote));
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        if !own.is_valid() {
            return None;
        }
        TraceParent::from_parts(
            u128::from_be_bytes(own.trace_id().to_bytes()),
            u64::from_be_bytes(own.span_id().to_bytes()),
        )
    }
}

#[cfg(not(feature = "otlp"))]
mod otlp {
    use super::LogSettings;
    use protocol::trace::TraceParent;

    pub(super) fn layer(_: &LogSettings, _: &str) -> Option<tracing_subscriber::layer::Identity> {
        None
    }

    pub(super) fn shutdown() {}

    pub(super) fn own_context(_: &tracing::Span, _: Option<&TraceParent>) -> Option<TraceParent> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "otlp")]
    #[test]
    fn with_export_the_ids_passed_on_are_the_exported_spans_own() {
        use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let gateway = tracing::info_span!("request");
            let started = start_trace(&gateway);
            let own = gateway.context().span().span_context().clone();
            assert_eq!(
                started.parts().0,
                u128::from_be_bytes(own.trace_id().to_bytes())
            );
            assert_eq!(
                started.parts().1,
                u64::from_be_bytes(own.span_id().to_bytes())
            );

            let responder = tracing::info_span!("answer");
            let onwards = continue_trace(&responder, &started);
            let joined = responder.context().span().span_context().clone();
            assert_eq!(onwards.trace_id(), started.trace_id(), "one trace");
            assert_eq!(
                u128::from_be_bytes(joined.trace_id().to_bytes()),
                started.parts().0
            );
            assert_eq!(
                onwards.parts().1,
                u64::from_be_bytes(joined.span_id().to_bytes())
            );
            assert_ne!(onwards.parts().1, started.parts().1);
        });
    }

    #[test]
    fn without_export_a_continued_trace_keeps_its_id() {
        let span = tracing::info_span!("test");
        let root = start_trace(&span);
        let next = continue_trace(&span, &root);
        assert_eq!(next.trace_id(), root.trace_id());
        assert_ne!(next, root);
    }
}
