//! A real headless Chromium driven through chromedriver's WebDriver HTTP API (Debian's
//! chromium + chromium-driver, installed by scripts/provision.sh).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::{eventually, http};

/// One WebDriver call with an optional JSON body; returns the status and the JSON answer.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::request_with(method, path, &[("Content-Type", "application/json")], &body);
    let reply = http::plain(addr, &request).await.unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
    (reply.status, serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
}

/// A browser session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (installed by scripts/provision.sh)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually(Duration::from_secs(20), "chromedriver ready", || async {
            if TcpStream::connect(addr).await.is_err() {
                return None;
            }
            let (status, body) = request(addr, "GET", "/status", None).await;
            (status == 200 && body["value"]["ready"] == json!(true)).then_some(())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let (status, body) = request(addr, "POST", "/session", Some(&capabilities)).await;
        assert_eq!(status, 200, "new session: {body}");
        let session = body["value"]["sessionId"].as_str().expect("session id").to_string();
        Browser { driver, addr, session, _profile: profile }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = request(self.addr, method, &format!("/session/{}{path}", self.session), body).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    /// Loads `url`.
    pub async fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] }))).await
    }

    /// Runs `script` until it returns something other than `null` or `false`, for at most
    /// `timeout`; returns that.
    pub async fn until(&self, timeout: Duration, what: &str, script: &str) -> Value {
        eventually(timeout, what, || async {
            let value = self.eval(script).await;
            (!value.is_null() && value != Value::Bool(false)).then_some(value)
        })
        .await
    }

    /// Resizes the window.
    pub async fn call_rect(&self, width: u32, height: u32) {
        self.call("POST", "/window/rect", Some(&json!({ "width": width, "height": height }))).await;
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(value.as_str().expect("base64 png")).unwrap()
    }

    /// Ends the session and the driver.
    pub async fn stop(mut self) {
        let _ = request(self.addr, "DELETE", &format!("/session/{}", self.session), None).await;
        let _ = self.driver.kill().await;
    }
}
