//! One request's way through: basic auth as the web configuration file asks (read again for
//! every request), then the route, then the headers every response carries — the daemon's
//! security headers first, the configured ones last so that they may replace them.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, WWW_AUTHENTICATE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Request, Response, StatusCode};

use super::slots::Slot;
use super::{route, Shared};

/// What a response other than the page may do in a browser: nothing.
const DATA_POLICY: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Answers one request: authentication, then the view, then the headers every response gets.
pub(super) async fn respond(shared: &Shared, slot: &Arc<Slot>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    // Re-read here too, not only per connection: a scraper's keep-alive connection may never
    // close, and a removed user must not keep working on it.
    let config = shared.web.config_file.as_ref().map(|file| file.refreshed());
    let extra = config.as_deref().map(|c| c.headers.as_slice()).unwrap_or_default();
    if let Some(config) = &config {
        if !config.users.is_empty() && !shared.gate.admits(&config.users, request.headers().get(AUTHORIZATION)).await {
            let response = Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(WWW_AUTHENTICATE, "Basic realm=\"buildkit-exporter\", charset=\"UTF-8\"")
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from_static(b"unauthorized\n")))
                .expect("static response");
            return secure(response, extra);
        }
    }
    let _serving = slot.serving();
    secure(route::route(&shared.views, &request), extra)
}

/// Adds the headers every response carries, then the configured ones (which may replace them).
fn secure(mut response: Response<Full<Bytes>>, extra: &[(HeaderName, HeaderValue)]) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.entry(CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(DATA_POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // For browsers older than CSP's frame-ancestors.
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use hyper::header::STRICT_TRANSPORT_SECURITY;

    use super::*;

    fn bare() -> Response<Full<Bytes>> {
        Response::new(Full::new(Bytes::new()))
    }

    #[test]
    fn every_response_is_locked_down() {
        let response = secure(bare(), &[]);
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header(CONTENT_SECURITY_POLICY), Some(DATA_POLICY));
        assert_eq!(header(X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
        assert_eq!(header(X_FRAME_OPTIONS), Some("DENY"));
        assert_eq!(header(REFERRER_POLICY), Some("no-referrer"));
    }

    #[test]
    fn a_route_s_own_policy_stays_and_configured_headers_come_last() {
        let mut page = bare();
        page.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'"));
        let extra = [
            (STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000")),
            (X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN")),
        ];
        let response = secure(page, &extra);
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header(CONTENT_SECURITY_POLICY), Some("default-src 'self'"));
        assert_eq!(header(STRICT_TRANSPORT_SECURITY), Some("max-age=63072000"));
        assert_eq!(header(X_FRAME_OPTIONS), Some("SAMEORIGIN"));
        assert_eq!(response.headers().get_all(X_FRAME_OPTIONS).iter().count(), 1, "replaced, not added");
    }
}
