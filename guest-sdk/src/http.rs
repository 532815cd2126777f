//! Outbound HTTP over `wasi:http`, for brokers that call a cloud API. The runtime allows only
//! the hosts listed in the manifest's `[grants] outbound_http`; anything else fails with
//! `HttpRequestDenied` before a connection is made.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

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

/// Sends a GET request to `url` (`http://` or `https://`).
///
/// # Errors
/// A description when the URL is malformed, the host is not allowed, or the request fails.
pub fn get(url: &str) -> Result<Response, String> {
    request("GET", url, None)
}

/// Sends a request with `method` (GET, POST, PUT, PATCH, DELETE) and an optional body.
///
/// # Errors
/// As [`get`].
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("the URL needs http:// or https://")?;
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
        other => return Err(format!("unsupported scheme {other}")),
    };
    let invalid = |what: &str| format!("invalid {what} in {url}");
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let outgoing = request
        .body()
        .map_err(|()| "the request body is taken".to_string())?;
    if let Some(body) = body {
        let stream = outgoing
            .write()
            .map_err(|()| "cannot write the body".to_string())?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the body: {e:?}"))?;
        }
    }
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was taken".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| "the body was taken".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|()| "the body stream was taken".to_string())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the body: {e:?}")),
        }
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(format!("the response is over {MAX_RESPONSE_BYTES} bytes"));
        }
    }
    Ok(Response { status, body })
}
