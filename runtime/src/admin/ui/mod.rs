//! The operator page at `/admin/ui`: server-rendered HTML (minijinja templates compiled into
//! the binary, no JavaScript), signed in with an admin or tenant token into an `HttpOnly`,
//! `SameSite=Strict` cookie session. It shows the brokers the token may manage (versions,
//! tenants, limits, grants, request and error counts, quarantine errors), the operations
//! running or failed lately, and the audit trail; its forms run the repairs, each carrying the
//! session's CSRF token.

use super::repair::{visible_audit, visible_operations};
use super::{AdminState, Caller};
use crate::ops::repair::{self, Repairer};
use crate::telemetry::metrics::{EndpointLabels, StatusLabels, ENDPOINTS};
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "brokerbox_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// Most sessions kept at once: signing in again and again (it takes a valid token) evicts the
/// oldest rather than growing memory.
pub const MAX_SESSIONS: usize = 1000;

/// A signed-in browser.
#[derive(Clone)]
struct Session {
    caller: Caller,
    csrf: String,
    expires: Instant,
    /// A message for the next page (what the last form did).
    flash: Option<(bool, String)>,
}

/// The sessions of the operator page, in memory (a restart signs everyone out).
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// When the runtime started: request rates are averaged since.
    started: Instant,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            map: Mutex::default(),
            started: Instant::now(),
        }
    }
}

/// A random token: two v4 UUIDs (244 random bits from the OS's generator).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    fn create(&self, caller: Caller) -> String {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = (map.iter())
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                map.remove(&oldest);
            }
        }
        let id = random_token();
        map.insert(
            id.clone(),
            Session {
                caller,
                csrf: random_token(),
                expires: now + SESSION_TTL,
                flash: None,
            },
        );
        id
    }

    /// The live session of the request's cookie, with its id.
    fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers)?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let session = map.get(&id)?;
        (session.expires > Instant::now()).then(|| (id, session.clone()))
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Session)) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = map.get_mut(id) {
            change(session);
        }
    }

    fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The session id the request's cookie carries.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

fn set_cookie(value: &str, max_age: u64) -> HeaderValue {
    let cookie =
        format!("{COOKIE}={value}; Path=/admin/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&cookie).expect("a cookie of token characters")
}

/// The page's templates, compiled once.
fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // `.html` templates escape every value (auto-escape by extension).
        env.add_template("login.html", include_str!("login.html"))
            .expect("a valid template");
        env.add_template("page.html", include_str!("page.html"))
            .expect("a valid template");
        env
    })
}

fn render(name: &str, context: Value) -> Response {
    match templates()
        .get_template(name)
        .and_then(|t| t.render(context))
    {
        Ok(html) => page_headers(Html(html).into_response()),
        Err(error) => {
            tracing::error!("operator page: {error:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

/// Headers every page carries: no caching, no framing, no script, no resource from elsewhere.
fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

/// The operator page's routes (outside the admin API's JSON error layer: its answers are HTML).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/ui", get(page))
        .route("/admin/ui/login", get(login_form).post(login))
        .route("/admin/ui/logout", post(logout))
        .route("/admin/ui/purge", post(purge))
        .route("/admin/ui/operation", post(operation))
        .route(
            "/admin/ui/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    include_str!("style.css"),
                )
            }),
        )
        .with_state(state)
}

async fn login_form() -> Response {
    render("login.html", json!({}))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// The caller a token names, compared in constant time with every token of the config.
fn caller_of(state: &AdminState, token: &str) -> Option<Caller> {
    let matches = |expected: &str| bool::from(expected.as_bytes().ct_eq(token.as_bytes()));
    if (state.config.admin.as_ref()).is_some_and(|a| matches(&a.operator_token)) {
        return Some(Caller::Operator);
    }
    (state.config.tenants.iter())
        .find(|t| matches(&t.token))
        .map(|t| Caller::Tenant(t.name.clone()))
}

async fn login(State(state): State<AdminState>, Form(form): Form<Login>) -> Response {
    let Some(caller) = caller_of(&state, form.token.trim()) else {
        let page = render(
            "login.html",
            json!({ "error": "That token is not an operator or tenant token of this runtime." }),
        );
        return (StatusCode::UNAUTHORIZED, page).into_response();
    };
    let id = state.sessions.create(caller);
    let mut response = Redirect::to("/admin/ui").into_response();
    let max_age = SESSION_TTL.as_secs();
    (response.headers_mut()).insert(header::SET_COOKIE, set_cookie(&id, max_age));
    response
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

/// The session of a form's request, if its CSRF token is the session's.
fn checked(state: &AdminState, headers: &HeaderMap, csrf: &str) -> Option<(String, Session)> {
    let (id, session) = state.sessions.of(headers)?;
    bool::from(session.csrf.as_bytes().ct_eq(csrf.as_bytes())).then_some((id, session))
}

fn forbidden() -> Response {
    let body = "This form is stale or did not come from this page: reload the page and try again.";
    (StatusCode::FORBIDDEN, body).into_response()
}

async fn logout(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    let Some((id, _)) = checked(&state, &headers, &form.csrf) else {
        return forbidden();
    };
    state.sessions.remove(&id);
    let mut response = Redirect::to("/admin/ui/login").into_response();
    (response.headers_mut()).insert(header::SET_COOKIE, set_cookie("", 0));
    response
}

#[derive(Deserialize)]
struct PurgeForm {
    csrf: String,
    broker: String,
    instance: String,
    #[serde(default)]
    force: Option<String>,
}

async fn purge(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<PurgeForm>,
) -> Response {
    let Some((id, session)) = checked(&state, &headers, &form.csrf) else {
        return forbidden();
    };
    let force = form.force.is_some();
    let result = match repairer(&state, &session.caller, &form.broker) {
        Some(who) => {
            let (ops, broker, instance) = (
                state.ops.clone(),
                form.broker.clone(),
                form.instance.trim().to_string(),
            );
            let done = tokio::spawn(async move {
                repair::purge_instance(&ops, &who, &broker, &instance, force).await
            })
            .await;
            match done {
                Ok(Ok(purged)) => Ok(format!(
                    "Purged instance {} of {}: {} binding(s), {} operation(s) removed.",
                    form.instance.trim(),
                    form.broker,
                    purged.bindings,
                    purged.operations
                )),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(format!("the repair failed: {error}")),
            }
        }
        None => Err(format!(
            "no broker named {:?} that you may manage",
            form.broker
        )),
    };
    done(&state, &id, result)
}

#[derive(Deserialize)]
struct OperationForm {
    csrf: String,
    broker: String,
    operation: String,
    action: String,
    #[serde(default)]
    force: Option<String>,
}

async fn operation(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<OperationForm>,
) -> Response {
    let Some((id, session)) = checked(&state, &headers, &form.csrf) else {
        return forbidden();
    };
    let Some(who) = repairer(&state, &session.caller, &form.broker) else {
        let error = format!("no broker named {:?} that you may manage", form.broker);
        return done(&state, &id, Err(error));
    };
    let force = form.force.is_some();
    let (ops, broker, op_id, action) = (
        state.ops.clone(),
        form.broker.clone(),
        form.operation.clone(),
        form.action.clone(),
    );
    let task = tokio::spawn(async move {
        match action.as_str() {
            "fail" => repair::fail_operation(&ops, &who, &broker, &op_id, None, force)
                .await
                .map(|op| format!("Operation {} is now failed.", op.id)),
            "retry" => repair::retry_operation(&ops, &who, &broker, &op_id)
                .await
                .map(|op| format!("Retrying operation {op_id} as operation {}.", op.id)),
            other => Err(repair::RepairError::NotFound(format!(
                "no action {other:?}"
            ))),
        }
    });
    let result = match task.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(error) => Err(format!("the repair failed: {error}")),
    };
    done(&state, &id, result)
}

/// Keeps what a form did for the next page, and goes back to it (POST, redirect, GET).
fn done(state: &AdminState, session: &str, result: Result<String, String>) -> Response {
    let flash = match result {
        Ok(notice) => (false, notice),
        Err(error) => (true, error),
    };
    state.sessions.update(session, |s| s.flash = Some(flash));
    Redirect::to("/admin/ui").into_response()
}

/// The repairer for `caller` on broker `name`, if the caller may manage it.
fn repairer(state: &AdminState, caller: &Caller, name: &str) -> Option<Repairer> {
    let tenant = super::brokers::tenant_of(state, name)?;
    caller.may(tenant.as_deref()).then(|| Repairer {
        actor: caller.actor(),
        tenant,
    })
}

/// A time in ms since the epoch, as the page shows it.
fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    httpdate::fmt_http_date(at)
}

/// Requests answered for broker `name` (of `tenant`) since start: all, 4xx, 5xx.
fn request_counts(state: &AdminState, name: &str, tenant: &str) -> (u64, u64, u64) {
    let (mut all, mut client, mut server) = (0, 0, 0);
    for endpoint in ENDPOINTS {
        let labels = EndpointLabels {
            broker: name.to_string(),
            tenant: tenant.to_string(),
            endpoint,
        };
        if state.requests.seconds.get(&labels).is_none() {
            continue;
        }
        for status in 100..600u16 {
            let labels = StatusLabels {
                broker: labels.broker.clone(),
                tenant: labels.tenant.clone(),
                endpoint,
                status,
            };
            if let Some(counter) = state.requests.requests.get(&labels) {
                let n = counter.get();
                all += n;
                match status {
                    400..=499 => client += n,
                    500..=599 => server += n,
                    _ => {}
                }
            }
        }
    }
    (all, client, server)
}

async fn page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((id, session)) = state.sessions.of(&headers) else {
        return Redirect::to("/admin/ui/login").into_response();
    };
    state.sessions.update(&id, |s| s.flash = None);
    let caller = &session.caller;
    match page_context(&state, caller).await {
        Ok(mut context) => {
            context["who"] = json!(caller.actor());
            context["csrf"] = json!(session.csrf);
            context["version"] = json!(env!("CARGO_PKG_VERSION"));
            match session.flash {
                Some((false, notice)) => context["notice"] = json!(notice),
                Some((true, error)) => context["error"] = json!(error),
                None => {}
            }
            render("page.html", context)
        }
        Err(error) => {
            let context = json!({
                "who": caller.actor(), "csrf": session.csrf, "version": env!("CARGO_PKG_VERSION"),
                "error": format!("cannot read the state store: {error}"),
                "brokers": [], "operations": [], "audit": [],
            });
            render("page.html", context)
        }
    }
}

async fn page_context(
    state: &AdminState,
    caller: &Caller,
) -> Result<Value, crate::error::ApiError> {
    let mut names: std::collections::BTreeSet<String> = (state.brokers.current().all())
        .map(|b| b.name.clone())
        .collect();
    names.extend(state.reloader.problems().into_keys());
    let mut brokers = Vec::new();
    for name in names {
        let Some(tenant) = super::brokers::tenant_of(state, &name) else {
            continue;
        };
        if !caller.may(tenant.as_deref()) {
            continue;
        }
        let instances = state.store.count_instances(&name).await?;
        let tenant = tenant.unwrap_or_default();
        let (requests, client_errors, server_errors) = request_counts(state, &name, &tenant);
        // Counts are exact; rates are per minute, averaged since start.
        let minutes = (state.sessions.started.elapsed().as_secs_f64() / 60.0).max(1.0 / 60.0);
        #[allow(clippy::cast_precision_loss)]
        let rate = |n: u64| format!("{n} ({:.1}/min)", n as f64 / minutes);
        let (requests, client_errors, server_errors) =
            (rate(requests), rate(client_errors), rate(server_errors));
        let row = match state.brokers.get(&name) {
            Some(b) => {
                let (l, g) = (&b.manifest.limits, &b.manifest.grants);
                let mut grants = Vec::new();
                if g.files {
                    grants.push("files".to_string());
                }
                if g.kv {
                    grants.push("kv".to_string());
                }
                if !g.outbound_http.is_empty() {
                    grants.push(format!("http: {}", g.outbound_http.join(", ")));
                }
                json!({
                    "name": name, "tenant": tenant, "version": b.version, "state": "serving",
                    "error": state.reloader.problem(&name).map(|p| format!("newest version refused: {}", p.error)),
                    "instances": instances,
                    "requests": requests, "client_errors": client_errors, "server_errors": server_errors,
                    "limits": format!("{} fuel, {} MiB, {} ms, {} at once", l.fuel, l.memory_mib, l.call_timeout_ms, l.max_concurrency),
                    "grants": if grants.is_empty() { "none".to_string() } else { grants.join("; ") },
                })
            }
            None => {
                let problem = state.reloader.problem(&name);
                json!({
                    "name": name, "tenant": tenant, "version": problem.as_ref().and_then(|p| p.version.clone()),
                    "state": "quarantined", "error": problem.map(|p| p.error),
                    "instances": instances,
                    "requests": requests, "client_errors": client_errors, "server_errors": server_errors,
                    "limits": "", "grants": "",
                })
            }
        };
        brokers.push(row);
    }
    let operations: Vec<Value> = visible_operations(state, caller)
        .await?
        .iter()
        .map(|op| {
            let resource = match &op.binding_id {
                Some(binding) => format!("binding {binding} of {}", op.instance_id),
                None => format!("instance {}", op.instance_id),
            };
            let now = crate::store::now_ms();
            json!({
                "id": op.id, "broker": op.broker, "kind": op.kind.as_str(), "resource": resource,
                "state": op.state.as_str(), "started": when(op.created_at), "actor": op.actor,
                "description": op.description,
                "running": op.owner.is_some() && op.lease_until.is_some_and(|until| until > now),
                "retryable": op.state == crate::store::OperationState::Failed
                    && op.kind != crate::store::OperationKind::Bind,
            })
        })
        .collect();
    let audit: Vec<Value> = visible_audit(state, caller, None, 50)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "seq": e.seq, "when": when(e.at), "actor": e.entry.actor, "action": e.entry.action,
                "broker": e.entry.broker, "resource": e.entry.resource,
                "outcome": e.entry.outcome, "detail": e.entry.detail,
            })
        })
        .collect();
    Ok(json!({ "brokers": brokers, "operations": operations, "audit": audit }))
}
