//! The dashboard: one page at `/` (HTML, CSS and JavaScript from `relay/dashboard/`, compiled
//! into the binary; plain SVG, no charting library, no build step) and the one JSON endpoint it
//! reads, `GET /api/dashboard`.
//!
//! The page takes a `/ws` token (from the address's fragment, `/#token=<jwt>`, kept in the tab's
//! sessionStorage and removed from the address bar), subscribes on `/ws` to the tests the token
//! grants, resumes with the last `resume_token` after a reconnect, and reads the snapshot again
//! on every event and every 2 seconds. The browser never talks to PostgreSQL.
//!
//! `GET /api/dashboard` with `Authorization: Bearer <jwt>`: 200 `{"grant": {"all": bool,
//! "test_ids": [...] | null}, "snapshot": <ab.dashboard(token's test_ids)>}` (sql/dashboard.sql:
//! tests with their evaluation and latest risk alert, alerts, health, in one statement); 401 for
//! a missing or bad token; 429 / 503 as for OFREP (the same read connection and limit).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::reads::{read_text, ReadError};
use crate::App;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");

/// Tests one snapshot carries at most (newest first).
const MAX_TESTS: i32 = 50;

/// Scripts and styles only from the relay itself, no inline code, no frames; `connect-src
/// 'self'` covers the page's own `/ws` (CSP Level 3 matches ws: and wss: on the same host).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /dashboard/style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// `GET /api/dashboard`: the snapshot of the tests the token grants.
pub async fn snapshot(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let grant = match app.verifier.verify(crate::auth::bearer_of(&headers)) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::UNAUTHORIZED, e),
    };
    let names: Option<Vec<String>> = grant.names().map(<[String]>::to_vec);
    let sql = "SELECT ab.dashboard($1, $2)::text";
    let text = match read_text(&app, "dashboard snapshot", sql, &[&names, &MAX_TESTS]).await {
        Ok(text) => text,
        Err(ReadError::Busy) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "too many reads at once (--ofrep-max-concurrent)");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(ReadError::Unavailable) => return error(StatusCode::SERVICE_UNAVAILABLE, "the database is not reachable now"),
        Err(ReadError::TimedOut) => return error(StatusCode::SERVICE_UNAVAILABLE, "the snapshot timed out (--query-timeout-seconds)"),
        Err(ReadError::Refused(db)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{} (SQLSTATE {})", db.message(), db.code().code()))
        }
    };
    // The snapshot is jsonb's text, valid JSON as it is: placed in the body, not parsed and
    // written again (it is re-read every 2 s by every open page).
    let grant = json!({"all": grant.allows_all(), "test_ids": names});
    let body = format!(r#"{{"grant":{grant},"snapshot":{text}}}"#);
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
        for (response, kind, needle) in [
            (index().await, "text/html", "dashboard/app.js"),
            (script().await, "text/javascript", "resume_token"),
            (style().await, "text/css", "@media"),
        ] {
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers().clone();
            assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.expect("body");
            assert!(String::from_utf8_lossy(&bytes).contains(needle), "{kind} lacks {needle}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy forbids inline code: a <script> with a body or a style="" would be blocked.
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style=\""));
        assert!(!APP_JS.contains(".innerHTML") && !APP_JS.contains("eval("), "the page builds DOM nodes, never HTML text");
    }
}
