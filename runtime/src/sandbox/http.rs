//! The `outbound_http` capability: `wasi:http` outgoing requests, allowed only to the hosts the
//! manifest lists, and only to public addresses unless the manifest allows a host's private
//! ones (see [`super::egress`]). The host resolves each name itself, checks every address it
//! got, and connects to a checked one (a DNS answer the guest controls cannot point it at
//! loopback or the cloud metadata address). A redirect is a new request: checked again.
//!
//! A refused host gets `HTTP-request-denied`, a refused address `destination-IP-prohibited`.
//! Each broker has at most [`MAX_CONNECTIONS`] outbound connections open and
//! [`MAX_LOOKUPS`] name lookups running, and one call reads at most
//! [`MAX_RESPONSE_BYTES_PER_CALL`] of response bodies.

use super::egress;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Outbound connections one broker may have open at once (beyond: `connection-limit-reached`).
pub const MAX_CONNECTIONS: usize = 16;
/// Name lookups one broker may have running at once, counting those its calls stopped
/// waiting for (each holds a thread of the blocking pool until the resolver returns).
pub const MAX_LOOKUPS: usize = 4;
/// Response body bytes one guest call may read, over all its requests.
pub const MAX_RESPONSE_BYTES_PER_CALL: u64 = 16 * 1024 * 1024;
/// Connecting (name resolution, TCP, TLS) when the guest sets no timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Entries of `host` (any port) or `host:port`, lower case.
fn normalized(entries: &[String]) -> Arc<[String]> {
    entries
        .iter()
        .map(|e| e.trim().to_ascii_lowercase())
        .collect()
}

/// Whether `entries` names `host` on `port`.
fn names(entries: &[String], host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let with_port = format!("{host}:{port}");
    entries
        .iter()
        .any(|entry| *entry == host || *entry == with_port)
}

/// The hosts a broker may call, those of them that may resolve to private addresses, and the
/// broker's outbound connections.
#[derive(Debug, Clone)]
pub struct HttpAllowlist {
    /// The broker the list is for, named on the lines that say what was refused.
    broker: Arc<str>,
    entries: Arc<[String]>,
    private: Arc<[String]>,
    connections: Arc<Semaphore>,
    lookups: Arc<Semaphore>,
}

impl Default for HttpAllowlist {
    fn default() -> Self {
        HttpAllowlist::new("", &[], &[])
    }
}

impl HttpAllowlist {
    /// Broker `broker`'s allowlist of `entries` (`host` or `host:port`); the hosts of
    /// `private` (same form) may also reach loopback, link-local, private and unique-local
    /// addresses.
    pub fn new(broker: &str, entries: &[String], private: &[String]) -> Self {
        HttpAllowlist {
            broker: broker.into(),
            entries: normalized(entries),
            private: normalized(private),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
        }
    }

    /// Whether a request to `host` on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        names(&self.entries, host, port)
    }

    /// Whether `host` on `port` may reach non-public addresses.
    pub fn allows_private(&self, host: &str, port: u16) -> bool {
        names(&self.private, host, port)
    }

    /// The hooks of one guest call: this allowlist and the call's response budget.
    pub fn for_call(&self) -> HttpHooks {
        HttpHooks {
            list: self.clone(),
            read: Arc::default(),
        }
    }
}

/// One guest call's `wasi:http` hooks.
pub struct HttpHooks {
    list: HttpAllowlist,
    /// Response body bytes the call has read.
    read: Arc<AtomicU64>,
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

impl WasiHttpHooks for HttpHooks {
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
        let Some(host) = uri.host().map(str::to_string) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        if !self.list.allows(&host, port) {
            tracing::warn!(
                broker = &*self.list.broker,
                uri = %uri,
                "outbound request refused: host not in the allowlist"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let (list, read) = (self.list.clone(), self.read.clone());
        Box::new(async move {
            let target = egress::Target {
                broker: &list.broker,
                host: &host,
                port,
                https,
                private: list.allows_private(&host, port),
                lookups: &list.lookups,
            };
            let connect_timeout = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(CONNECT_TIMEOUT);
            let permit = (list.connections.clone().try_acquire_owned())
                .map_err(|_| Error::ConnectionLimitReached)?;
            let stream = egress::connect(&target, connect_timeout).await?;
            let (response, io) = egress::exchange(stream, request, connect_timeout).await?;
            let response = response.map(|incoming| Budgeted { incoming, read }.boxed_unsync());
            let io = async move {
                let done = io.await;
                drop(permit);
                done
            };
            Ok((
                response,
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

/// A response body counted against the call's budget.
struct Budgeted {
    incoming: hyper::body::Incoming,
    read: Arc<AtomicU64>,
}

impl http_body::Body for Budgeted {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                let total = self.read.fetch_add(len, Ordering::Relaxed) + len;
                if total > MAX_RESPONSE_BYTES_PER_CALL {
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                        MAX_RESPONSE_BYTES_PER_CALL,
                    )))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Error::from(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_or_without_port() {
        let list = HttpAllowlist::new(
            "b",
            &["API.example.com".into(), "127.0.0.1:8080".into()],
            &["127.0.0.1:8080".into()],
        );
        assert!(list.allows("api.example.com", 443));
        assert!(list.allows("127.0.0.1", 8080));
        assert!(!list.allows("127.0.0.1", 8081));
        assert!(!list.allows("example.com", 443));
        assert!(!HttpAllowlist::default().allows("api.example.com", 443));
        assert!(list.allows_private("127.0.0.1", 8080));
        assert!(!list.allows_private("api.example.com", 443));
    }
}
