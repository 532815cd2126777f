//! The `outbound_http` capability: `wasi:http` outgoing requests, allowed only to the hosts the
//! manifest lists. Any other destination is refused before a connection is made, and the guest
//! sees `HTTP-request-denied`.

use http_body_util::BodyExt;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hosts a broker may call: `host` (any port) or `host:port` entries, lower case.
#[derive(Debug, Clone, Default)]
pub struct HttpAllowlist {
    entries: Arc<[String]>,
}

impl HttpAllowlist {
    /// An allowlist of `entries` (`host` or `host:port`).
    pub fn new(entries: &[String]) -> Self {
        HttpAllowlist {
            entries: entries
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request to `host` on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let with_port = format!("{host}:{port}");
        self.entries
            .iter()
            .any(|entry| *entry == host || *entry == with_port)
    }
}

/// The future `send_request` hands back.
type Sent = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpAllowlist {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        drop(fut);
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let allowed = uri.host().is_some_and(|host| self.allows(host, port));
        if !allowed {
            tracing::warn!(uri = %uri, "outbound request refused: host not in the allowlist");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_or_without_port() {
        let list = HttpAllowlist::new(&["API.example.com".into(), "127.0.0.1:8080".into()]);
        assert!(list.allows("api.example.com", 443));
        assert!(list.allows("127.0.0.1", 8080));
        assert!(!list.allows("127.0.0.1", 8081));
        assert!(!list.allows("example.com", 443));
        assert!(!HttpAllowlist::default().allows("api.example.com", 443));
    }
}
