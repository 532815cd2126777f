//! The egress guard of `outbound_http`: names are resolved by the host, every address is
//! checked, and the connection goes to a checked address, so a DNS answer cannot send a guest
//! to loopback, link-local (the cloud metadata address 169.254.169.254), private or
//! unique-local ranges unless the manifest allows that host's private addresses.

use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, WasiBody};

/// Where a request goes.
pub struct Target<'a> {
    /// The broker making the request (named on the line when it is refused).
    pub broker: &'a str,
    /// The host name or address of the URL.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// Whether the URL is `https`.
    pub https: bool,
    /// Whether the manifest lets this host reach non-public addresses.
    pub private: bool,
    /// The broker's name lookups: a permit is held until a lookup ends, even one whose call
    /// stopped waiting for it (see [`resolve`]).
    pub lookups: &'a Arc<Semaphore>,
}

/// Whether `ip` is an address on the public internet: not loopback, unspecified, link-local,
/// private (RFC 1918), shared (100.64/10), unique-local (fc00::/7), multicast, broadcast or
/// documentation. An IPv4-mapped IPv6 address is judged as its IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_private()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

/// A connection to `target`, to an address the guard allows.
///
/// # Errors
/// `destination-IP-prohibited` when every address of the name is refused; otherwise a DNS or
/// connection error (or timeout).
pub async fn connect(target: &Target<'_>, timeout: Duration) -> Result<Box<dyn Stream>, Error> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let port = target.port;
    let resolved = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let name = host.to_string();
            resolve(target.lookups, timeout, move || {
                std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
                    .map(Iterator::collect)
            })
            .await?
        }
    };
    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
        (resolved.into_iter()).partition(|addr| target.private || is_public(addr.ip()));
    if allowed.is_empty() {
        tracing::warn!(
            broker = target.broker,
            host,
            addresses = ?refused,
            "outbound request refused: the host resolves to non-public addresses only \
             (the manifest's outbound_http_private may allow them)"
        );
        return Err(if refused.is_empty() {
            Error::DestinationNotFound
        } else {
            Error::DestinationIpProhibited
        });
    }
    let mut last = Error::DestinationUnavailable;
    let mut tcp = None;
    for addr in allowed {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(error)) => last = Error::Connect(error),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    let tcp = tcp.ok_or(last)?;
    if !target.https {
        return Ok(Box::new(tcp));
    }
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())?,
    };
    let tls = tokio::time::timeout(timeout, tls_connector().connect(name, tcp))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
    Ok(Box::new(tls))
}

/// Runs `lookup` (the system resolver, which blocks) on the blocking pool under a permit of
/// `lookups`, waiting at most `timeout` for a permit and the answer.
///
/// The permit moves into the blocking task: a lookup the call stopped waiting for (its
/// timeout, or the guest's deadline dropping the call) keeps its permit until the resolver
/// returns. A guest that asks for names that never answer therefore holds at most its
/// broker's permits' worth of blocking threads, however often it retries.
///
/// # Errors
/// `DNS-timeout` when no permit or no answer came in time; `destination-not-found` when the
/// name does not resolve.
async fn resolve(
    lookups: &Arc<Semaphore>,
    timeout: Duration,
    lookup: impl FnOnce() -> std::io::Result<Vec<SocketAddr>> + Send + 'static,
) -> Result<Vec<SocketAddr>, Error> {
    let lookups = lookups.clone();
    let resolved = tokio::time::timeout(timeout, async move {
        let permit = lookups
            .acquire_owned()
            .await
            .map_err(|_| Error::DnsTimeout)?;
        tokio::task::spawn_blocking(move || {
            let _held = permit;
            lookup()
        })
        .await
        .map_err(|_| Error::DestinationNotFound)?
        .map_err(|_| Error::DestinationNotFound)
    });
    resolved.await.map_err(|_| Error::DnsTimeout)?
}

/// A byte stream a request runs on (TCP, or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The TLS client: the web PKI's roots (as `wasi:http`'s default sender trusts).
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// The connection's end: resolves when it closes.
pub type Io = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

/// Sends `request` over `stream` (HTTP/1.1); answers the response head, and the connection's
/// future, which the caller drives while the body is read.
///
/// # Errors
/// When the handshake, the sending or the response head fails or times out.
pub async fn exchange(
    stream: Box<dyn Stream>,
    mut request: http::Request<WasiBody>,
    timeout: Duration,
) -> Result<(http::Response<hyper::body::Incoming>, Io), Error> {
    let (mut sender, conn) = tokio::time::timeout(
        timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The request line carries the path only (the host is in the `host` header).
    let path = (request.uri().path_and_query()).map_or("/", http::uri::PathAndQuery::as_str);
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let mut conn: Io = Box::pin(async move { conn.await.map_err(Error::from) });
    let send = sender.send_request(request);
    tokio::pin!(send);
    // The connection is driven while the response head is awaited.
    let mut conn_done = false;
    let response = loop {
        if conn_done {
            break send.await;
        }
        tokio::select! {
            response = &mut send => break response,
            done = &mut conn => {
                done?;
                conn_done = true;
            }
        }
    }?;
    let io: Io = if conn_done {
        Box::pin(async { Ok(()) })
    } else {
        conn
    };
    Ok((response, io))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_abandoned_lookup_keeps_its_permit_until_the_resolver_returns() {
        let lookups = Arc::new(Semaphore::new(1));
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slow = |started: Arc<std::sync::atomic::AtomicUsize>| {
            move || {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(400));
                Ok(vec![SocketAddr::from(([203, 0, 113, 1], 80))])
            }
        };
        let short = Duration::from_millis(50);
        let first = resolve(&lookups, short, slow(started.clone())).await;
        assert!(matches!(first, Err(Error::DnsTimeout)), "{first:?}");
        // The call gave up; its lookup still runs and still holds the broker's only permit.
        assert_eq!(lookups.available_permits(), 0);
        let second = resolve(&lookups, short, slow(started.clone())).await;
        assert!(matches!(second, Err(Error::DnsTimeout)), "{second:?}");
        assert_eq!(
            started.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "no second blocking lookup while the first holds the permit"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            lookups.available_permits(),
            1,
            "returned when the resolver did"
        );
        let answered = resolve(&lookups, Duration::from_secs(5), || {
            Ok(vec![SocketAddr::from(([203, 0, 113, 2], 443))])
        })
        .await
        .expect("a permit and an answer");
        assert_eq!(answered, vec![SocketAddr::from(([203, 0, 113, 2], 443))]);
        let missing = resolve(&lookups, short, || Err(std::io::ErrorKind::NotFound.into())).await;
        assert!(
            matches!(missing, Err(Error::DestinationNotFound)),
            "{missing:?}"
        );
    }

    #[test]
    fn only_public_addresses_pass() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(allowed.parse().unwrap()), "{allowed}");
        }
    }
}
