//! `/watch` fan-out: each change is encoded once whatever the number of streams that get it, a
//! stream of one service gets nothing (and costs nothing) when other services change, and a
//! reader too slow for its queue is taken off the live fan-out without losing or doubling an
//! event: it catches up from the change log, or gets a snapshot when it fell out of it.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
};

/// Registers `web` instance `port` again with new metadata: one `upsert` per call.
async fn touch(cp: &TestControlPlane, service: &str, port: u16, generation: u32) -> u64 {
    // About 8 kB per event, so that few of them fill the socket buffers of an unread stream.
    let mut metadata: serde_json::Map<String, Value> = (0..16)
        .map(|k| (format!("pad{k}"), Value::from("x".repeat(500))))
        .collect();
    metadata.insert("generation".into(), generation.to_string().into());
    let body = json!({
        "service": service,
        "address": format!("http://127.0.0.1:{port}"),
        "metadata": metadata,
    });
    register(cp, body).await["revision"].as_u64().unwrap()
}

#[tokio::test]
async fn each_change_is_encoded_once_and_only_its_services_streams_get_it() {
    let cp = TestControlPlane::in_memory(|_| {}).await;
    register(&cp, seed("a", 1)).await;
    register(&cp, seed("b", 1)).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut w = Watch::open(&cp, "?service=a", None).await;
        assert_eq!(w.next().await.0.event, "snapshot");
        streams.push(w);
    }
    // After its snapshot, each stream joins the live fan-out.
    live_streams(&cp, 5).await;
    let events = metric(&cp, "waypost_watch_events_total").await;
    let encoded = metric(&cp, "waypost_watch_encoded_total").await;

    for generation in 0..20 {
        touch(&cp, "b", 1, generation).await;
    }
    let last = touch(&cp, "a", 1, 99).await;
    for w in &mut streams {
        let (ev, data) = w.next().await;
        assert_eq!(ev.event, "upsert");
        assert_eq!(
            data["revision"], last,
            "the stream of `a` skipped b's changes"
        );
        assert_eq!(data["instance"]["metadata"]["generation"], "99");
    }
    // Twenty changes of `b` queued nothing and encoded nothing; one of `a` was encoded once
    // and queued five times.
    assert_eq!(metric(&cp, "waypost_watch_events_total").await, events + 5);
    assert_eq!(
        metric(&cp, "waypost_watch_encoded_total").await,
        encoded + 1
    );
}

/// A `/watch` request on a socket with a tiny receive buffer, left unread: the server's writes
/// stall and its queue for the stream fills.
async fn unread_stream(cp: &TestControlPlane, query: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stream = socket.connect(cp.running.addr).await.unwrap();
    let request = format!("GET /watch{query} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The events of a `/watch` response read off a raw socket (chunked HTTP/1.1). Each chunk the
/// server writes holds whole events, so chunks are joined and split on blank lines.
struct Sse {
    reader: BufReader<TcpStream>,
    text: String,
}

impl Sse {
    async fn open(stream: TcpStream) -> Self {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if line.starts_with("HTTP/1.1") {
                assert!(line.contains(" 200 "), "{line}");
            }
        }
        Self {
            reader,
            text: String::new(),
        }
    }

    /// The next event (not a keep-alive) as `(event, data)`.
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(DEADLINE, self.read())
            .await
            .expect("an event within the deadline")
    }

    async fn read(&mut self) -> (String, Value) {
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..end + 2).collect();
                let mut event = None;
                let mut data = None;
                for l in frame.lines() {
                    if let Some(e) = l.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = l.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<Value>(d).unwrap());
                    }
                }
                if let (Some(event), Some(data)) = (event, data) {
                    return (event, data);
                }
            }
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.unwrap();
            self.text
                .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }

    /// Events up to the one at revision `until`; revisions must rise.
    async fn until(&mut self, until: u64) -> Vec<(String, u64)> {
        let mut seen = Vec::new();
        loop {
            let (event, data) = self.next().await;
            let revision = data["revision"].as_u64().unwrap();
            if let Some((_, prev)) = seen.last() {
                assert!(
                    revision > *prev || event == "snapshot",
                    "{revision} after {prev}"
                );
            }
            seen.push((event, revision));
            if revision >= until {
                return seen;
            }
        }
    }
}

/// Waits until `n` streams are fed by the live fan-out.
async fn live_streams(cp: &TestControlPlane, n: u64) {
    eventually(DEADLINE, "live streams", || async {
        (metric(cp, "waypost_watch_live_streams").await == n).then_some(())
    })
    .await;
}

/// Changes `web` until the socket buffers between the server and an unread stream are full
/// and the fan-out takes the stream off (at most 5,000 changes, 40 MB); returns the head
/// revision.
async fn fill(cp: &TestControlPlane) -> u64 {
    for generation in 0..5_000 {
        let head = touch(cp, "web", 1, generation).await;
        if generation % 20 == 19 && metric(cp, "waypost_watch_detached_total").await >= 1 {
            return head;
        }
    }
    panic!("5,000 changes did not fill the stream's queue");
}

/// After catching up, the stream is live again: one more change is queued by the fan-out.
async fn rejoins(cp: &TestControlPlane, sse: &mut Sse, head: u64) {
    live_streams(cp, 1).await;
    let events = metric(cp, "waypost_watch_events_total").await;
    let next = touch(cp, "web", 2, 0).await;
    assert_eq!(next, head + 1);
    let (event, data) = sse.next().await;
    assert_eq!(
        (event.as_str(), data["revision"].as_u64()),
        ("upsert", Some(next))
    );
    assert_eq!(metric(cp, "waypost_watch_events_total").await, events + 1);
}

#[tokio::test]
async fn a_slow_reader_leaves_the_fan_out_and_catches_up_from_the_log() {
    let cp = TestControlPlane::in_memory(|c| c.watch_buffer = 4).await;
    register(&cp, seed("web", 1)).await;
    let stream = unread_stream(&cp, "?service=web").await;
    let head = fill(&cp).await;

    // Reading now yields the snapshot and every change after it, once each and in order.
    let mut sse = Sse::open(stream).await;
    let events = sse.until(head).await;
    assert_eq!(events[0].0, "snapshot");
    let start = events[0].1;
    let revisions: Vec<u64> = events[1..].iter().map(|e| e.1).collect();
    assert_eq!(revisions, (start + 1..=head).collect::<Vec<_>>());
    rejoins(&cp, &mut sse, head).await;
}

#[tokio::test]
async fn a_slow_reader_behind_the_kept_history_gets_a_snapshot_then_live_changes() {
    let cp = TestControlPlane::in_memory(|c| {
        c.watch_buffer = 4;
        c.history = 50;
    })
    .await;
    register(&cp, seed("web", 1)).await;
    let stream = unread_stream(&cp, "").await;
    let mut head = fill(&cp).await;
    // More changes than the history keeps: where the stream was taken off is gone from it.
    for generation in 0..60 {
        head = touch(&cp, "web", 1, generation).await;
    }

    // A first snapshot and the few changes queued before the fan-out let go; then, the reader
    // having fallen out of the 50 kept changes, a second snapshot; then changes in order.
    let mut sse = Sse::open(stream).await;
    let events = sse.until(head).await;
    let snapshots: Vec<usize> = (0..events.len())
        .filter(|i| events[*i].0 == "snapshot")
        .collect();
    assert_eq!(snapshots.len(), 2, "{} events", events.len());
    let second = snapshots[1];
    let after: Vec<u64> = events[second + 1..].iter().map(|e| e.1).collect();
    assert_eq!(after, (events[second].1 + 1..=head).collect::<Vec<_>>());
    rejoins(&cp, &mut sse, head).await;
}
