//! Logging and tracing setup shared by every binary: human or JSON logs on stderr, and OTLP
//! span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context travels in gRPC
//! metadata (see `grpc`), so one ticket's life forms one trace across the services.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Keeps the exporter alive; `shutdown` flushes pending spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops span export. Safe to call more than once.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.force_flush() {
                eprintln!("telemetry: flushing spans failed: {e}");
            }
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: shutting down the exporter failed: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`. If a subscriber is
/// already installed (several services in one process), only the exporter is set up once.
pub fn init(service: &str, format: LogFormat, default_filter: &str) -> Telemetry {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colour only for a terminal: journald and log files get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_filter(filter())
            .boxed(),
    };

    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let provider = endpoint.and_then(|_| match build_provider(service) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("telemetry: OTLP export disabled: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service.to_string()))
            .with_filter(EnvFilter::new("info,mc=debug,otel::tracing=trace"))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed && provider.is_some() {
        tracing::warn!(
            "a tracing subscriber was already installed; spans of {service} are not exported"
        );
    }
    Telemetry { provider }
}

fn build_provider(
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Ok(ep) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        builder = builder.with_endpoint(ep);
    }
    let exporter = builder.build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The current span's W3C `traceparent`, for handing to a child process.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let ctx = tracing::Span::current().context();
    let sc = ctx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The OpenTelemetry context a W3C `traceparent` names (empty: none).
pub fn context_from(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    if traceparent.is_empty() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    let ctx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    ctx.span().span_context().is_valid().then_some(ctx)
}

/// A fresh, sampled W3C `traceparent`: a new trace for work that starts where no span is
/// recorded (no exporter configured, or no subscriber at all), so a ticket always has a
/// trace id and its agent always gets `TRACEPARENT`.
pub fn new_traceparent() -> String {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let g = RandomIdGenerator::default();
    format!("00-{}-{}-01", g.new_trace_id(), g.new_span_id())
}

/// A `traceparent` in the same trace as `parent` with a new span id (for a child process
/// when no span of ours is recorded); `None` if `parent` is not a valid one.
pub fn child_traceparent(parent: &str) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ctx = context_from(parent)?;
    let sc = ctx.span().span_context().clone();
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        RandomIdGenerator::default().new_span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// Makes `span` a child of the trace `traceparent` names, so work done for one ticket at
/// different times and in different services forms one trace.
pub fn join_trace(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(ctx) = context_from(traceparent) {
        let _ = span.set_parent(ctx);
    }
}

/// Tells systemd (`Type=notify`) the service is ready; a no-op elsewhere.
pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_made_when_none_is_recorded_and_children_stay_in_it() {
        let p = new_traceparent();
        let parts: Vec<&str> = p.split('-').collect();
        assert_eq!(parts.len(), 4, "{p}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert!(context_from(&p).is_some(), "{p} is a valid traceparent");
        assert_ne!(new_traceparent(), p);
        let c = child_traceparent(&p).unwrap();
        assert_eq!(&c[..35], &p[..35], "same trace: {c} / {p}");
        assert_ne!(c, p);
        assert_eq!(child_traceparent(""), None);
        assert_eq!(child_traceparent("00-zz-11-01"), None);
    }
}
