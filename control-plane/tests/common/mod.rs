//! Helpers shared by the integration tests: JSON over real HTTP, and an SSE reader.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use reqwest::{Client, StatusCode, header::HeaderMap};
use serde_json::Value;

pub use waypost_control::testkit::{TestControlPlane, eventually};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn index(&self) -> u64 {
        self.headers["x-waypost-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn content_type(&self) -> &str {
        self.headers["content-type"].to_str().unwrap()
    }

    /// Asserts an RFC 9457 problem with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].as_str().unwrap().ends_with(code));
        assert!(self.body["title"].is_string());
        assert!(!self.body["detail"].as_str().unwrap().is_empty());
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build a reqwest client")
}

pub async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("read body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn post(cp: &TestControlPlane, path: &str, body: Value) -> Answer {
    answer(
        client()
            .post(cp.at(path))
            .json(&body)
            .send()
            .await
            .expect("POST"),
    )
    .await
}

pub async fn post_raw(
    cp: &TestControlPlane,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let res = client()
        .post(cp.at(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    answer(res).await
}

pub async fn get(cp: &TestControlPlane, path: &str) -> Answer {
    answer(client().get(cp.at(path)).send().await.expect("GET")).await
}

/// The body of `GET path` as text (metrics, the OpenAPI document).
pub async fn text(cp: &TestControlPlane, path: &str) -> String {
    let res = client().get(cp.at(path)).send().await.expect("GET");
    res.text().await.expect("read body")
}

/// An unlabelled counter or gauge from `/metrics`, by its full name.
pub async fn metric(cp: &TestControlPlane, name: &str) -> u64 {
    let text = text(cp, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

pub async fn register(cp: &TestControlPlane, body: Value) -> Value {
    let a = post(cp, "/register", body).await;
    assert!(a.status.is_success(), "register failed: {}", a.body);
    a.body
}

/// Ids of the instances `/discover/{service}{query}` returns.
pub async fn ids(cp: &TestControlPlane, service: &str, query: &str) -> Vec<String> {
    let a = get(cp, &format!("/discover/{service}{query}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A `/watch` stream read event by event.
pub struct Watch {
    events: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Event, String>> + Send>>,
}

impl Watch {
    pub async fn open(cp: &TestControlPlane, query: &str, last_event_id: Option<&str>) -> Watch {
        let mut req = client().get(cp.at(&format!("/watch{query}")));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.expect("GET /watch");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let events = res
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        Watch {
            events: Box::pin(events),
        }
    }

    /// The next event, with its parsed data; panics after the deadline.
    pub async fn next(&mut self) -> (Event, Value) {
        let ev = tokio::time::timeout(DEADLINE, self.events.next())
            .await
            .expect("a watch event within the deadline")
            .expect("stream open")
            .expect("well-formed event");
        let data = serde_json::from_str(&ev.data).expect("event data is JSON");
        (ev, data)
    }
}

pub fn seed(service: &str, port: u16) -> Value {
    serde_json::json!({"service": service, "address": format!("http://127.0.0.1:{port}")})
}
