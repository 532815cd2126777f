//! OpenTelemetry traces over OTLP/HTTP (protobuf), when `--otlp-endpoint` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) names a collector: every `tracing` span of the runtime (an
//! OSB request, an operation, a guest call) becomes an OTLP span, exported in batches by a
//! background thread so a slow or absent collector never holds a request.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The path OTLP/HTTP receivers take traces on.
pub const TRACES_PATH: &str = "/v1/traces";

/// The exporter's pipeline; [`Traces::shutdown`] sends what is still buffered.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// The traces URL for a collector at `endpoint` (`http://HOST:4318`, with or without the
/// `/v1/traces` path).
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with(TRACES_PATH) {
        endpoint.to_string()
    } else {
        format!("{endpoint}{TRACES_PATH}")
    }
}

impl Traces {
    /// Starts exporting to the collector at `endpoint`.
    ///
    /// # Errors
    /// When the endpoint is not a valid URL.
    pub fn start(endpoint: &str) -> anyhow::Result<Self> {
        let url = traces_url(endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&url)
            .build()
            .with_context(|| format!("invalid --otlp-endpoint {endpoint:?}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("brokerbox")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Traces { provider })
    }

    /// A `tracing` layer turning spans into OTLP spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("brokerbox"))
    }

    /// Exports the spans still buffered and stops (blocks up to the exporter's timeout).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("brokerbox: exporting the last traces failed: {error}");
        }
    }
}
