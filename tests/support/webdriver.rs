//! A real browser for tests: Debian's `chromium`, headless, driven over W3C WebDriver by
//! `chromedriver` (package `chromium-driver`). Killed with its browser when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::live::{http, http_body};

/// chromedriver, killed (with its browser) when the test ends, pass or fail.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    session: Option<String>,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            // Closes the browser; best effort, bounded by the driver's own timeouts.
            let addr = self.addr;
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        http(addr, "DELETE", &format!("/session/{s}"), &[]),
                    )
                    .await;
                })
            })
            .join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub async fn start() -> Driver {
        let port = super::free_tcp_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut d = Driver {
            child,
            addr,
            session: None,
            profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && d.call("GET", "/status", None).await["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-dev-shm-usage",
                         "--window-size=1200,720",
                         format!("--user-data-dir={}", d.profile.path().display())]
            }
        }}});
        let v = d.call("POST", "/session", Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"));
        d.session = Some(id.to_string());
        d
    }

    /// One WebDriver command; returns its `value`.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (_, _, text) = http_body(
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body,
        )
        .await;
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        v["value"].clone()
    }

    pub async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let s = self.session.as_ref().unwrap();
        self.call(method, &format!("/session/{s}{path}"), body)
            .await
    }

    /// Run a script in the page. An open alert (a name that ran as script) fails it.
    pub async fn js(&self, script: &str) -> Value {
        let v = self
            .session(
                "POST",
                "/execute/sync",
                Some(json!({"script": script, "args": []})),
            )
            .await;
        if let Some(err) = v.get("error") {
            panic!("script failed ({err}): {v}");
        }
        v
    }

    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(script).await;
            if v != Value::Null && v != false {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
