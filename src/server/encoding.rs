//! How a response body travels: gzip when the request's `Accept-Encoding` allows it, identity
//! otherwise; and the gzip encoder itself, whose state is kept between responses.

use std::sync::{Mutex, PoisonError};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_ENCODING, VARY};
use hyper::http::response::Builder;

/// The RFC 1952 member header, as flate2's `GzEncoder` writes it at the fast level (so that
/// responses stay byte for byte what they were): deflate, no flags, no modification time,
/// "fastest" (4), unknown OS (255).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];
/// The RFC 1952 member trailer: CRC-32 and length, each four bytes.
const GZIP_TRAILER_LEN: usize = 8;
/// Most compressors kept spare; see [`SPARE`].
const SPARES: usize = 2;

/// Compressors kept between responses.
///
/// A compressor's state (window, hash chains, symbol and output buffers: about 300 KiB with
/// flate2's default backend) costs more to allocate and fault in than the fast level spends on
/// a typical response: in a release build a fresh one costs ~150 µs before the first byte and a
/// reset one ~20 µs, which halves the time to gzip 120 KB of exposition and cuts it six-fold for
/// a small JSON answer. Two are kept, about 600 KiB at most: enough for a pair of Prometheus
/// servers scraping at the same moment. Past two at once, a response builds its own and drops
/// it, as every response used to, so a burst of concurrent scrapes leaves nothing more behind.
/// A shared list rather than one per thread, because the runtime has a worker per core and a
/// large build host would end up holding one on each.
///
/// The output buffer is not kept: it becomes the response body, handed to hyper without a copy,
/// and keeping one would trade an allocation for that copy.
static SPARE: Mutex<Vec<Compress>> = Mutex::new(Vec::new());

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
    let spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut deflate = spare.unwrap_or_else(|| Compress::new(Compression::fast(), false));
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + body.len() / 4 + GZIP_TRAILER_LEN);
    out.extend_from_slice(&GZIP_HEADER);
    loop {
        let rest = &body[deflate.total_in() as usize..];
        match deflate.compress_vec(rest, &mut out, FlushCompress::Finish).expect("deflating memory") {
            Status::StreamEnd => break,
            // `compress_vec` writes only into spare capacity: a body that shrinks less than
            // expected needs more.
            Status::Ok | Status::BufError => out.reserve(out.len()),
        }
    }
    let mut crc = Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // The length modulo 2³², as RFC 1952 has it.
    out.extend_from_slice(&crc.amount().to_le_bytes());
    deflate.reset();
    let mut spares = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    if spares.len() < SPARES {
        spares.push(deflate);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

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
    fn a_reused_compressor_writes_what_a_fresh_encoder_writes() {
        let (first, second) = ("# HELP a\na 1\n".repeat(500), "{\"builds\":[]}".repeat(50));
        let fresh = |body: &str| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
            encoder.write_all(body.as_bytes()).unwrap();
            encoder.finish().unwrap()
        };
        // Each in turn, so that every one after the first may run on a compressor another left.
        for body in [&first, &second, &first, &second] {
            assert_eq!(gzip(body.as_bytes())[..], fresh(body)[..]);
        }
        assert!(SPARE.lock().unwrap().len() <= SPARES);
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
