//! Outbound HTTP over `wasi:http`, for brokers that call a cloud API. The runtime allows only
//! the hosts listed in the manifest's `[grants] outbound_http`; anything else fails with
//! [`HttpError::Denied`] before a connection is made. A host that resolves to a loopback,
//! link-local or private address is refused too (`DestinationIpProhibited`) unless the manifest
//! lists it in `outbound_http_private`. Redirects are followed (up to [`MAX_REDIRECTS`]), each
//! one checked by the runtime as a new request.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL or method cannot be sent (no `http://`/`https://`, a bad authority or path).
    InvalidRequest(String),
    /// The runtime refused the request: the host is not granted in the manifest
    /// (`HttpRequestDenied`), or resolves to a non-public address it does not allow
    /// (`DestinationIpProhibited`).
    Denied(String),
    /// The request was sent but failed (DNS, connection, timeout, protocol), as `wasi:http`
    /// reported it.
    Failed(String),
    /// The response body is over [`MAX_RESPONSE_BYTES`].
    TooLarge,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidRequest(d) => write!(f, "invalid request: {d}"),
            HttpError::Denied(d) => write!(f, "request denied by the runtime: {d}"),
            HttpError::Failed(d) => write!(f, "request failed: {d}"),
            HttpError::TooLarge => write!(f, "the response is over {MAX_RESPONSE_BYTES} bytes"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::BrokerError {
    fn from(error: HttpError) -> Self {
        crate::BrokerError::Internal(error.to_string())
    }
}

fn from_code(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied("HttpRequestDenied".into()),
        ErrorCode::DestinationIpProhibited => HttpError::Denied("DestinationIpProhibited".into()),
        other => HttpError::Failed(format!("{other:?}")),
    }
}

/// Largest response body read, in bytes; the rest is an error.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Most redirects (301, 302, 303, 307, 308) one request follows.
pub const MAX_REDIRECTS: usize = 5;

/// Sends a GET request to `url` (`http://` or `https://`).
///
/// # Errors
/// [`HttpError::InvalidRequest`] for a malformed URL, [`HttpError::Denied`] for a host the
/// manifest does not grant, [`HttpError::Failed`] when the request fails, [`HttpError::TooLarge`].
pub fn get(url: &str) -> Result<Response, HttpError> {
    request("GET", url, None)
}

/// Sends a request with `method` (GET, POST, PUT, PATCH, DELETE) and an optional body;
/// follows redirects (a 307 or 308 with the same method and body, the others as a GET).
///
/// # Errors
/// As [`get`]; [`HttpError::Failed`] after more than [`MAX_REDIRECTS`] redirects.
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, HttpError> {
    let (mut method, mut url, mut body) = (method.to_string(), url.to_string(), body);
    for _ in 0..=MAX_REDIRECTS {
        let (response, location) = send(&method, &url, body)?;
        let Some(location) =
            location.filter(|_| matches!(response.status, 301 | 302 | 303 | 307 | 308))
        else {
            return Ok(response);
        };
        url = resolve(&url, &location);
        if !matches!(response.status, 307 | 308) {
            method = "GET".into();
            body = None;
        }
    }
    Err(HttpError::Failed(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// `location` (absolute, or a path on the same origin) from `base`.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        format!("/{location}")
    };
    format!("{}{path}", &base[..origin_end])
}

/// One request: the response and its `location` header.
fn send(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<(Response, Option<String>), HttpError> {
    let invalid = |what: &str| HttpError::InvalidRequest(format!("{what} in {url}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("no http:// or https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(invalid(&format!("unsupported scheme {other}"))),
    };
    request
        .set_method(&method)
        .map_err(|()| invalid("invalid method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("invalid scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("invalid authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("invalid path"))?;
    let outgoing = request
        .body()
        .map_err(|()| HttpError::Failed("the request body is taken".into()))?;
    if let Some(body) = body {
        let stream = outgoing
            .write()
            .map_err(|()| HttpError::Failed("cannot write the body".into()))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::Failed(format!("writing the body: {e:?}")))?;
        }
    }
    let pending = outgoing_handler::handle(request, None).map_err(from_code)?;
    OutgoingBody::finish(outgoing, None).map_err(from_code)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| HttpError::Failed("no response".into()))?
        .map_err(|()| HttpError::Failed("the response was taken".into()))?
        .map_err(from_code)?;
    let status = response.status();
    let location = (response.headers().get("location").into_iter().next())
        .map(|value| String::from_utf8_lossy(&value).to_string());
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Failed("the body was taken".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Failed("the body stream was taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(HttpError::Failed(format!("reading the body: {e:?}"))),
        }
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
    }
    Ok((Response { status, body }, location))
}
