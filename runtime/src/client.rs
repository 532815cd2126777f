//! The one OSB client of the project (used by `brokerbox check`, the tests and the bench):
//! every request carries the broker's credentials and API version unless the caller removes
//! them, and every answer is read whole, its body as JSON (`Null` when it is not JSON).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// One answer of the broker under check.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Body as JSON; `Null` when it is empty or not JSON.
    pub body: Value,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Whether the body is a JSON object with a non-empty `description` (an OSB error body).
    pub fn has_description(&self) -> bool {
        self.body
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty())
    }

    /// Whether the body is a JSON object.
    pub fn is_object(&self) -> bool {
        self.body.is_object()
    }

    /// A string field of the body.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name)?.as_str()
    }

    /// Reads `response` whole.
    ///
    /// # Errors
    /// When the body cannot be read.
    pub async fn read(response: reqwest::Response) -> anyhow::Result<Answer> {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        })
    }

    /// A short description for failure messages.
    pub fn summary(&self) -> String {
        let body = match &self.body {
            Value::Null => "<not JSON>".to_string(),
            body => body.to_string(),
        };
        let body: String = body.chars().take(200).collect();
        format!("got {} {body}", self.status.as_u16())
    }
}

/// Talks OSB to one broker.
pub struct Client {
    http: reqwest::Client,
    base: String,
    username: String,
    password: String,
    /// The `X-Broker-API-Version` sent.
    pub version: String,
}

impl Client {
    /// A client for the broker at `base` (the URL before `/v2`), giving up on an answer after
    /// 70 s (platforms give up after 60 s).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str, username: &str, password: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(70))
            .build()?;
        Ok(Self::with_http(http, base, username, password))
    }

    /// A client for the broker at `base` that sends through `http` (its connections shared).
    pub fn with_http(http: reqwest::Client, base: &str, username: &str, password: &str) -> Self {
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            username: username.to_string(),
            password: password.to_string(),
            version: "2.17".to_string(),
        }
    }

    /// The broker's URL (before `/v2`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/v2`) with credentials and version set.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.bare(method, path)
            .basic_auth(&self.username, Some(&self.password))
            .header("X-Broker-API-Version", &self.version)
    }

    /// A request to `path` without credentials or version.
    pub fn bare(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// The configured credentials with a wrong password.
    pub fn wrong_password(&self, request: RequestBuilder) -> RequestBuilder {
        request.basic_auth(&self.username, Some(format!("{}-wrong", self.password)))
    }

    /// Sends `request`; a transport failure is an error.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Answer> {
        Answer::read(request.send().await?).await
    }

    /// Sends a JSON request with credentials and version.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let request = self.request(method, path);
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        self.send(request).await
    }
}

impl Client {
    /// Adds the configured credentials to `request`.
    pub fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        request.basic_auth(&self.username, Some(&self.password))
    }
}
