//! Which view answers a request, and how: a plain function of the [`Views`] and the request's
//! method, path and `Accept-Encoding`, with no socket, connection or authentication in sight, so
//! that every route is tested by calling it.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use super::encoding;
use crate::fleet::Fleet;
use crate::views::metrics::{Exposition, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::views::{api, page};

/// What the handlers read.
pub struct Views {
    /// Every metric the daemon exposes.
    pub exposition: Exposition,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Every builder, for the JSON API.
    pub fleet: Arc<Fleet>,
    /// The status page, linking to `telemetry_path`.
    page: Bytes,
    /// The page's Content-Security-Policy: its own inline script and style, by hash, and
    /// nothing else.
    page_policy: HeaderValue,
}

impl Views {
    /// The views of `fleet` and `exposition`, with the page prepared once.
    pub fn new(exposition: Exposition, telemetry_path: String, fleet: Arc<Fleet>) -> Views {
        let page = page::linking_to(&telemetry_path);
        let page_policy = HeaderValue::from_str(&page::policy(&page)).expect("hashes are header-safe");
        Views { exposition, telemetry_path, fleet, page: Bytes::from(page), page_policy }
    }
}

/// The response to `request`. Only its method, path and headers are read: the body type is
/// whatever the caller has (hyper's `Incoming`, or `()` in tests).
pub(super) fn route<B>(views: &Views, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET, HEAD")
            .body(Full::new(Bytes::from_static(b"method not allowed\n")))
            .expect("static response");
    }
    const JSON: &str = "application/json";
    let path = request.uri().path();
    if path == LAST_FAILED {
        return last_failed(views, request.uri().query().unwrap_or_default());
    }
    // (status, content type, body, whether it is worth compressing)
    let (status, content_type, body, compressible) = if path == views.telemetry_path {
        (StatusCode::OK, METRICS_CONTENT_TYPE, Bytes::from(views.exposition.render()), true)
    } else if path == "/healthz" {
        (StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(b"ok\n"), false)
    } else if is_page(path) {
        (StatusCode::OK, "text/html; charset=utf-8", views.page.clone(), true)
    } else if path == "/api/v1/sources" {
        (StatusCode::OK, JSON, Bytes::from(api::sources(&views.fleet, crate::clock::now())), true)
    } else if path == "/api/v1/builds" {
        (StatusCode::OK, JSON, Bytes::from(api::list(&views.fleet.builders(), crate::clock::now())), true)
    } else if let Some(reference) = path.strip_prefix("/api/v1/builds/") {
        match api::one(&views.fleet.builders(), reference, crate::clock::now()) {
            Some(body) => (StatusCode::OK, JSON, Bytes::from(body), true),
            None => (StatusCode::NOT_FOUND, JSON, Bytes::from_static(b"{\"error\":\"no such build\"}"), false),
        }
    } else {
        (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"not found\n"), false)
    };
    let mut response = Response::builder().status(status).header(CONTENT_TYPE, content_type);
    if is_page(path) {
        response = response.header(CONTENT_SECURITY_POLICY, views.page_policy.clone());
    }
    let (response, body) =
        if compressible { encoding::negotiate(response, request.headers(), body) } else { (response, body) };
    response.body(Full::new(body)).expect("static response")
}

/// The address of a name's last failure, which the failure series link to (a link of the
/// name's: a build's ref in a label would outlive the build).
const LAST_FAILED: &str = "/builds/last-failed";

/// `/builds/last-failed?builder=B&name=N`: a redirect to the page of the newest failed build of
/// that name on that builder, while its last build is a failure.
fn last_failed(views: &Views, query: &str) -> Response<Full<Bytes>> {
    let builder = query_param(query, "builder").unwrap_or_default();
    let name = query_param(query, "name").unwrap_or_default();
    let found = views
        .fleet
        .builders()
        .iter()
        .filter(|b| b.name == builder)
        .flat_map(|b| b.last_failures())
        .find(|f| f.name == name);
    let response = Response::builder().header(CONTENT_TYPE, "text/plain; charset=utf-8");
    match found {
        // Relative, so that it holds under whatever path a proxy serves the exporter at.
        Some(failure) => response
            .status(StatusCode::SEE_OTHER)
            .header(LOCATION, format!("./{}", failure.reference))
            .body(Full::new(Bytes::new())),
        None => response.status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from(format!(
            "the last build of {name:?} on builder {builder:?} is not a failure the exporter knows of \
             (a later build succeeded, or the exporter restarted)\n"
        )))),
    }
    .expect("valid response")
}

/// The value of `key` in a URL query, percent-decoded (`+` as a space).
fn query_param(query: &str, key: &str) -> Option<String> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' => match (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Whether `path` is the status page: `/`, or a build's own address `/builds/{ref}` (the same
/// page, which then draws that build).
fn is_page(path: &str) -> bool {
    path == "/" || path.strip_prefix("/builds/").is_some_and(|r| !r.is_empty() && !r.contains('/'))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use hyper::header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY};

    use super::*;
    use crate::builder::Builder;
    use crate::model::{BuildInfo, Event};

    const METRICS: &str = "/custom/metrics";

    /// The views of one builder, wired as the daemon wires them, with the metrics at [`METRICS`].
    fn views() -> (Views, Arc<Builder>) {
        let (exposition, fleet, builder) = crate::views::one_builder();
        (Views::new(exposition, METRICS.to_string(), fleet), builder)
    }

    /// Status, headers and body of `method path`, with `headers` on the request.
    async fn call(views: &Views, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = route(views, &request.body(()).unwrap());
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    struct Reply {
        status: StatusCode,
        headers: hyper::HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn header(&self, name: hyper::header::HeaderName) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    async fn get(views: &Views, path: &str) -> Reply {
        call(views, Method::GET, path, &[]).await
    }

    #[tokio::test]
    async fn the_metrics_are_at_the_configured_path_only() {
        let (views, _) = views();
        let metrics = get(&views, METRICS).await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert_eq!(metrics.header(CONTENT_TYPE), Some(METRICS_CONTENT_TYPE));
        assert!(metrics.text().starts_with("# HELP buildkit_"), "{}", metrics.text());
        assert_eq!(get(&views, "/metrics").await.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn health() {
        let (views, _) = views();
        let health = get(&views, "/healthz").await;
        assert_eq!((health.status, health.text()), (StatusCode::OK, "ok\n"));
        assert_eq!(health.header(CONTENT_TYPE), Some("text/plain; charset=utf-8"));
        assert_eq!(health.header(VARY), None, "not worth compressing");
    }

    #[tokio::test]
    async fn the_page_is_served_at_root_and_at_each_build_under_its_own_policy() {
        let (views, _) = views();
        let policy = page::policy(&page::linking_to(METRICS));
        for path in ["/", "/builds/abc123"] {
            let page = get(&views, path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}");
            assert_eq!(page.header(CONTENT_TYPE), Some("text/html; charset=utf-8"), "{path}");
            assert_eq!(page.header(CONTENT_SECURITY_POLICY), Some(policy.as_str()), "{path}");
            assert!(page.text().contains(&format!("href=\"{METRICS}\"")), "{path} links to the metrics");
        }
        for path in ["/builds/", "/builds/a/b", "/index.html"] {
            assert_eq!(get(&views, path).await.status, StatusCode::NOT_FOUND, "{path}");
        }
        // Other responses get their (stricter) policy on the way out, not from the route.
        for path in [METRICS, "/healthz", "/api/v1/builds", "/nowhere"] {
            assert_eq!(get(&views, path).await.header(CONTENT_SECURITY_POLICY), None, "{path}");
        }
    }

    #[tokio::test]
    async fn the_json_api() {
        let (views, builder) = views();
        builder.apply(Event::Started(BuildInfo {
            reference: "r1".to_string(),
            created_at: 100.0,
            image: None,
            secrets: Vec::new(),
            args: Vec::new(),
            no_cache: None,
            context: Default::default(),
        }));
        for path in ["/api/v1/builds", "/api/v1/sources", "/api/v1/builds/r1"] {
            let reply = get(&views, path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(reply.header(CONTENT_TYPE), Some("application/json"), "{path}");
            let json: serde_json::Value = serde_json::from_str(reply.text()).unwrap();
            match path {
                "/api/v1/builds" => assert_eq!(json["builds"][0]["ref"], "r1", "{json}"),
                "/api/v1/sources" => assert_eq!(json["sources"][0]["builder"], "default", "{json}"),
                _ => assert_eq!(json["ref"], "r1", "{json}"),
            }
        }
        let missing = get(&views, "/api/v1/builds/nope").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.header(CONTENT_TYPE), Some("application/json"));
        assert_eq!(missing.text(), "{\"error\":\"no such build\"}");
    }

    #[tokio::test]
    async fn anything_else_is_not_found() {
        let (views, _) = views();
        for path in ["/nowhere", "/api/v1", "/api/v1/", "/healthz/"] {
            let reply = get(&views, path).await;
            assert_eq!((reply.status, reply.text()), (StatusCode::NOT_FOUND, "not found\n"), "{path}");
            assert_eq!(reply.header(CONTENT_TYPE), Some("text/plain; charset=utf-8"), "{path}");
        }
    }

    #[tokio::test]
    async fn only_get_and_head_are_allowed() {
        let (views, _) = views();
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let reply = call(&views, method.clone(), METRICS, &[]).await;
            assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(reply.header(ALLOW), Some("GET, HEAD"), "{method}");
        }
        // HEAD is answered as GET; hyper leaves the body out on the wire.
        let (head, get) = (call(&views, Method::HEAD, "/", &[]).await, get(&views, "/").await);
        assert_eq!((head.status, &head.headers, &head.body), (get.status, &get.headers, &get.body));
    }

    #[tokio::test]
    async fn gzip_when_asked_and_worth_it() {
        let (views, _) = views();
        let gunzip = |reply: &Reply| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&reply.body[..]), &mut text).unwrap();
            text
        };
        let asks = [(ACCEPT_ENCODING.as_str(), "gzip, deflate")];
        for path in [METRICS, "/", "/api/v1/builds", "/api/v1/sources"] {
            let plain = get(&views, path).await;
            assert_eq!(plain.header(VARY), Some("Accept-Encoding"), "{path}");
            assert_eq!(plain.header(CONTENT_ENCODING), None, "{path}");
            let packed = call(&views, Method::GET, path, &asks).await;
            assert_eq!(packed.header(VARY), Some("Accept-Encoding"), "{path}");
            assert_eq!(packed.header(CONTENT_ENCODING), Some("gzip"), "{path}");
            let text = gunzip(&packed);
            if path.starts_with("/api/") {
                // Each answer has its own `generated_at`.
                let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["sources"].clone();
                assert_eq!(json(&text), json(plain.text()), "{path}");
            } else {
                let first = |s: &str| s.lines().next().map(str::to_string);
                assert_eq!(first(&text), first(plain.text()), "{path}");
            }
            let refused = call(&views, Method::GET, path, &[(ACCEPT_ENCODING.as_str(), "gzip;q=0")]).await;
            assert_eq!(refused.header(CONTENT_ENCODING), None, "{path}");
        }
        assert_eq!(gunzip(&call(&views, Method::GET, "/", &asks).await), get(&views, "/").await.text());
        // Small or fixed answers travel as they are.
        for path in ["/healthz", "/api/v1/builds/nope", "/nowhere"] {
            let reply = call(&views, Method::GET, path, &asks).await;
            assert_eq!((reply.header(CONTENT_ENCODING), reply.header(VARY)), (None, None), "{path}");
        }
    }

    #[tokio::test]
    async fn a_names_last_failure_redirects_to_its_build_while_it_is_the_last_build() {
        let (views, builder) = views();
        let path = "/builds/last-failed?builder=default&name=team%2Fapp";
        assert_eq!(get(&views, path).await.status, StatusCode::NOT_FOUND, "no failure yet");
        let failed = |reference: &str, outcome| {
            let info =
                BuildInfo { reference: reference.into(), image: Some("team/app:1".into()), ..Default::default() };
            builder.apply(Event::Started(info.clone()));
            let completion = crate::model::Completion {
                info,
                completed_at: 10.0,
                outcome,
                generation: 0,
                warnings: 0,
                failure: None,
            };
            builder.apply(Event::Completed(completion));
        };
        failed("r1", crate::model::Outcome::Failed("boom".into()));
        let found = get(&views, path).await;
        assert_eq!((found.status, found.header(LOCATION)), (StatusCode::SEE_OTHER, Some("./r1")));
        let other = get(&views, "/builds/last-failed?builder=ci&name=team%2Fapp").await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "another builder");
        failed("r2", crate::model::Outcome::Succeeded);
        let gone = get(&views, path).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert!(gone.text().contains("is not a failure"), "{}", gone.text());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(query_param("builder=default%2Fci&name=a+b", "builder").as_deref(), Some("default/ci"));
        assert_eq!(query_param("builder=default%2Fci&name=a+b", "name").as_deref(), Some("a b"));
        assert_eq!(query_param("name=%C3%BC%2", "name").as_deref(), Some("ü%2"), "a broken escape as it is");
        assert_eq!(query_param("names=x", "name"), None);
        assert_eq!(query_param("", "name"), None);
    }
}
