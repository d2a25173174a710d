//! The console (ARCHITECTURE.md §10): read-only HTML pages at `/ui/…`, rendered on the
//! server with `maud` (which escapes every value it is given: config values are text
//! from the repository, so they are attacker-controlled), with the stylesheet and the
//! small script embedded in the binary. No page runs inline script: the
//! Content-Security-Policy allows only `/ui/console.js`.
//!
//! Sign-in: a form posts a token; it is kept in an HttpOnly, SameSite=Strict session
//! cookie (Secure under TLS) and checked on every page by [`super::guard::admit`], the
//! same check as the API's, so a page shows exactly what the token's scopes allow. The
//! cookie is read by the console's routes only: the API takes tokens from headers, so a
//! cookie never authorizes an API call another site could make the browser send.

mod live;
mod overview;
mod pair;
mod search;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};

use super::guard::{admit, Refusal};
use super::AppState;
use crate::auth::Principal;

/// The session cookie's name.
const COOKIE: &str = "confhub_session";

/// Every asset the console uses, embedded: it works offline and needs no build step.
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// What the pages may load and do: their own stylesheet and script, requests to their
/// own origin, and nothing else (no inline script or style, no frames, no other site).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; `/` leads to it.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview::show))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route(
            "/ui/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/ui/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route("/ui/search", get(search::show))
        .route("/ui/events", get(live::events))
        .route("/ui/{service}/{env}", get(pair::show))
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// Who is looking: the principal of the session's token (every server with tokens),
/// or everyone (an open server, which every page says in a banner).
pub(super) struct Viewer {
    pub(super) principal: Principal,
    pub(super) open: bool,
}

impl Viewer {
    fn name(&self) -> Option<&str> {
        self.principal.name.as_deref()
    }
}

/// The token in the request's session cookie.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let open = state.auth.is_open();
        match admit(state, session_token(&parts.headers)) {
            Ok(principal) => Ok(Viewer { principal, open }),
            // No session, or its token was removed from the settings: sign in again.
            Err(Refusal::Unauthenticated(_)) => Err(Redirect::to("/ui/sign-in").into_response()),
            Err(limited) => Err(limited.into_response()),
        }
    }
}

/// A page: the layout around `body`, with the console's security headers.
pub(super) fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Response {
    render(StatusCode::OK, title, viewer, None, body)
}

/// A page that follows changes live: `watch` names the pair it shows
/// (`service/env`), or `*` for any pair the viewer may read.
pub(super) fn live_page(title: &str, viewer: &Viewer, watch: &str, body: Markup) -> Response {
    render(StatusCode::OK, title, Some(viewer), Some(watch), body)
}

pub(super) fn page_with_status(
    status: StatusCode,
    title: &str,
    viewer: Option<&Viewer>,
    body: Markup,
) -> Response {
    render(status, title, viewer, None, body)
}

fn render(
    status: StatusCode,
    title: &str,
    viewer: Option<&Viewer>,
    watch: Option<&str>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · confhub" }
                link rel="stylesheet" href="/ui/console.css";
                script src="/ui/console.js" defer {}
            }
            body data-live=[watch] {
                header.top {
                    a.brand href="/ui/" { "confhub" }
                    @if let Some(viewer) = viewer {
                        nav {
                            a href="/ui/" { "Overview" }
                            a href="/ui/search" { "Search" }
                        }
                        div.who {
                            @if let Some(name) = viewer.name() {
                                span { "Signed in as " strong { (name) } }
                                form method="post" action="/ui/sign-out" {
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                @if viewer.is_some_and(|v| v.open) {
                    div.banner role="status" {
                        strong { "Open server. " }
                        "No access tokens are configured: anyone who can reach this server sees every config."
                    }
                }
                main #main { (body) }
            }
        }
    };
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show config: no cache keeps them after the session ends.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn sign_in_form(error: Option<&str>) -> Markup {
    html! {
        section.signin {
            h1 { "Sign in" }
            p { "Paste an access token. It is kept for this browser session only, and shows what its scopes allow." }
            @if let Some(error) = error {
                p.error role="alert" { "✗ " (error) }
            }
            form method="post" action="/ui/sign-in" {
                label for="token" { "Access token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
        }
    }
}

async fn sign_in_page(State(state): State<Arc<AppState>>) -> Response {
    if state.auth.is_open() {
        return Redirect::to("/ui/").into_response();
    }
    page("Sign in", None, sign_in_form(None))
}

#[derive(serde::Deserialize)]
struct SignIn {
    token: String,
}

/// A form from another site must not sign the browser in (with the other site's token):
/// a browser names the page a form came from in `Origin`; it must be this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Browsers send Origin on every form post; tools that do not are not a browser
        // another site could drive.
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_some() && origin_host == host
}

/// Behind TLS (its own, or a proxy's that says so), the cookie is sent over TLS only.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return page_with_status(
            StatusCode::FORBIDDEN,
            "Sign in",
            None,
            sign_in_form(Some("this sign-in came from another site's page")),
        );
    }
    let Ok(Form(form)) = form else {
        return page_with_status(
            StatusCode::BAD_REQUEST,
            "Sign in",
            None,
            sign_in_form(Some("the form had no token")),
        );
    };
    let token = form.token.trim();
    // Cookie values are a restricted charset; a token outside it is no token of ours.
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b));
    let principal = if cookie_safe {
        admit(&state, Some(token))
    } else {
        Err(Refusal::Unauthenticated(crate::auth::AuthError::Unknown))
    };
    match principal {
        Ok(principal) => {
            tracing::info!(token_name = principal.who(), "console sign-in");
            let secure = if secure(&state, &headers) {
                "; Secure"
            } else {
                ""
            };
            with_cookie(Redirect::to("/ui/"), token, secure)
        }
        Err(Refusal::Limited(wait)) => page_with_status(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign in",
            None,
            sign_in_form(Some(&format!("too many attempts; retry in {wait} s"))),
        ),
        Err(Refusal::Unauthenticated(_)) => page_with_status(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            None,
            sign_in_form(Some("no access token of this server matches")),
        ),
    }
}

async fn sign_out() -> Response {
    with_cookie(Redirect::to("/ui/sign-in"), "", "; Max-Age=0")
}

/// `redirect`, setting the session cookie to `token`, with the attributes every session
/// cookie has and `extra` ones (`; Secure`, `; Max-Age=0`).
fn with_cookie(redirect: Redirect, token: &str, extra: &str) -> Response {
    let mut response = redirect.into_response();
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{extra}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A short commit id for display.
pub(super) fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}
