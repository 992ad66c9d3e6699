//! The live status page at `/`: one self-contained HTML document (no external assets) that polls
//! the JSON API every second and redraws in place, and the Content-Security-Policy it runs
//! under, derived from the page itself so that the two cannot drift apart.

use base64::Engine as _;

/// The page.
pub const HTML: &str = include_str!("page.html");

/// The page as served: its link to the metrics points at `telemetry_path`.
pub fn linking_to(telemetry_path: &str) -> String {
    HTML.replace("/metrics\"", &format!("{telemetry_path}\""))
}

/// The Content-Security-Policy of a self-contained page: its inline `<script>` and `<style>`
/// blocks are allowed by their SHA-256 (so nothing injected into it could run), it may fetch
/// from its own origin (the JSON API) and nothing else, and no other site may frame it.
pub fn policy(html: &str) -> String {
    let sources = |tag: &str| {
        let hashes: Vec<String> = inline_blocks(html, tag)
            .into_iter()
            .map(|block| {
                let digest = ring::digest::digest(&ring::digest::SHA256, block.as_bytes());
                format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
            })
            .collect();
        if hashes.is_empty() {
            "'none'".to_string()
        } else {
            hashes.join(" ")
        }
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sources("script"),
        sources("style")
    )
}

/// The text of every `<tag ...>...</tag>` block, exactly as browsers hash it.
fn inline_blocks<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut blocks = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        // `<scripts>` or `<styled>` are other tags.
        if !after.starts_with(['>', ' ', '\t', '\n', '\r']) {
            rest = after;
            continue;
        }
        let Some(body) = after.find('>').map(|end| &after[end + 1..]) else { break };
        let Some(end) = body.find(&close) else { break };
        blocks.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_policy_allows_exactly_its_inline_blocks() {
        let html = "<style>a{}</style><script>go()</script><scripts>x</scripts><script type=\"module\">m()</script>";
        assert_eq!(inline_blocks(html, "script"), ["go()", "m()"]);
        assert_eq!(inline_blocks(html, "style"), ["a{}"]);
        let policy = policy(html);
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 3, "{policy}");
        // The digest of "go()" as browsers compute it (`echo -n 'go()' | sha256sum`, base64).
        let digest = ring::digest::digest(&ring::digest::SHA256, b"go()");
        assert!(policy.contains(&base64::engine::general_purpose::STANDARD.encode(digest.as_ref())));
        assert!(super::policy("<p>no script</p>").contains("script-src 'none'; style-src 'none'"));
    }

    #[test]
    fn the_status_page_runs_under_its_policy() {
        // The policy allows inline blocks by hash, not inline attributes: an event handler or a
        // style attribute added to the page would be blocked by browsers, so none may be there.
        let policy = policy(HTML);
        assert_eq!(policy.matches("'sha256-").count(), 2, "one script and one style block: {policy}");
        for attribute in [" style=", " onclick=", " onload=", " onerror=", "javascript:"] {
            assert!(!HTML.contains(attribute), "the page has {attribute}");
        }
    }

    #[test]
    fn the_page_links_to_the_configured_metrics_path() {
        let page = linking_to("/custom/path");
        assert!(page.contains("/custom/path\"") && !page.contains("\"/metrics\""));
        // The link is no inline block: the policy is the same whichever path it names.
        assert_eq!(policy(&page), policy(HTML));
    }
}
