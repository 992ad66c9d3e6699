//! How a response body travels: gzip when the request's `Accept-Encoding` allows it, identity
//! otherwise.

use std::io::Write as _;

use hyper::body::Bytes;
use hyper::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
use hyper::http::response::Builder;

/// `body` as the request's `Accept-Encoding` (in `request`) allows it, with the headers that say
/// which: `Vary` always, so that caches keep the encodings apart, and `Content-Encoding` when
/// gzipped.
pub(super) fn negotiate(response: Builder, request: &HeaderMap, body: Bytes) -> (Builder, Bytes) {
    let response = response.header(VARY, "Accept-Encoding");
    if accepts_gzip(request) {
        (response.header(CONTENT_ENCODING, "gzip"), gzip(&body))
    } else {
        (response, body)
    }
}

/// Whether `Accept-Encoding` allows gzip: named (or `*`) with a quality above zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(quality > 0.0),
                "*" => any = Some(quality > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Gzips a body rendered in memory. The fastest level: a build host's cores are busy building,
/// and the exposition text shrinks several-fold even so.
fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    encoder.write_all(body).expect("writing to memory");
    Bytes::from(encoder.finish().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use hyper::header::HeaderValue;
    use hyper::Response;

    use super::*;

    fn gunzip(packed: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(packed).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn accept_encoding() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(accepts("*"));
        assert!(accepts("GZIP"));
        assert!(!accepts("identity"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("*;q=0.5, gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn gzip_round_trips() {
        let text = "buildkit_builds_running{builder=\"default\"} 0\n".repeat(100);
        let packed = gzip(text.as_bytes());
        assert!(packed.len() < text.len() / 5);
        assert_eq!(gunzip(&packed), text);
        // Empty, and barely compressible (the output outgrows its first estimate).
        assert_eq!(gunzip(&gzip(b"")), "");
        let noise: String =
            (0..20_000u32).map(|i| char::from(b'!' + (i.wrapping_mul(2_654_435_761) >> 27) as u8)).collect();
        assert_eq!(gunzip(&gzip(noise.as_bytes())), noise);
    }

    #[test]
    fn negotiation_says_what_it_did() {
        let mut asks = HeaderMap::new();
        asks.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let body = Bytes::from("ok\n".repeat(100));
        let (response, packed) = negotiate(Response::builder(), &asks, body.clone());
        let response = response.body(()).unwrap();
        assert_eq!(response.headers()[VARY], "Accept-Encoding");
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(gunzip(&packed).as_bytes(), &body[..]);
        let (response, plain) = negotiate(Response::builder(), &HeaderMap::new(), body.clone());
        let response = response.body(()).unwrap();
        assert_eq!(response.headers()[VARY], "Accept-Encoding");
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
        assert_eq!(plain, body);
    }
}
