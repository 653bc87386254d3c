//! `waypost dev` as a real process: every listener on port 0, every address the banner prints
//! answers its protocol (HTTP, DNS, the HTTP proxy, a TCP route), and two instances run side by
//! side.

use std::{collections::HashMap, net::SocketAddr, process::Stdio, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines},
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Child, ChildStdout, Command},
    task::JoinHandle,
};

const DEADLINE: Duration = Duration::from_secs(15);

/// A running `waypost dev` and the addresses its banner printed, by name.
struct Dev {
    child: Child,
    addrs: HashMap<String, String>,
    // Kept open so that the process never writes to a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Dev {
    /// Starts `waypost dev` with every listener on 127.0.0.1:0 (plus `extra` flags) and reads
    /// its banner up to the `try:` line.
    async fn start(extra: &[&str]) -> Dev {
        let any = "127.0.0.1:0";
        let mut child = Command::new(env!("CARGO_BIN_EXE_waypost"))
            .args([
                "dev",
                "--listen",
                any,
                "--dns-listen",
                any,
                "--admin-listen",
                any,
            ])
            .args(["--http-listen", any, "--xds-listen", any])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("waypost starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut addrs = HashMap::new();
        let reading = async {
            while let Some(line) = stdout.next_line().await.expect("readable stdout") {
                if line == "try:" {
                    return;
                }
                // "  HTTP proxy:    http://127.0.0.1:41009": the name, then the address.
                if let Some((name, rest)) = line.split_once(": ") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    addrs.insert(name.trim().to_owned(), addr.to_owned());
                }
            }
            panic!("stdout ended before the banner did");
        };
        tokio::time::timeout(DEADLINE, reading)
            .await
            .expect("the banner within the deadline");
        Dev {
            child,
            addrs,
            _stdout: stdout,
        }
    }

    fn addr(&self, name: &str) -> &str {
        self.addrs
            .get(name)
            .unwrap_or_else(|| panic!("the banner names {name:?}: {:?}", self.addrs))
    }

    fn socket(&self, name: &str) -> SocketAddr {
        let addr = self.addr(name);
        addr.trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {addr:?} is an address: {e}"))
    }

    /// SIGTERM, then a clean exit within the deadline.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait works");
        assert!(status.success(), "{status}");
    }
}

/// An upstream instance: answers every HTTP request on every connection with `body`, then
/// closes. The task ends with the test's runtime.
async fn backend(body: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

async fn a_records(dns: SocketAddr, name: &str) -> Vec<String> {
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    Message::from_vec(&buf[..n])
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

async fn status(http: &reqwest::Client, url: String) -> u16 {
    http.get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} answers: {e}"))
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_address_in_the_banner_answers() {
    let (upstream, _serving) = backend("hello from web").await;
    let dev = Dev::start(&["--tcp", "127.0.0.1:0=web"]).await;
    let control = dev.addr("control plane").to_owned();
    let admin = dev.addr("sidecar admin").to_owned();
    let proxy = dev.addr("HTTP proxy").to_owned();
    let dns = dev.socket("DNS");
    let route = dev.socket("TCP route");
    let xds = dev.socket("xDS (gRPC)");
    // The xDS listener accepts connections (the ADS stream itself: control-plane/tests/xds.rs).
    tokio::net::TcpStream::connect(xds)
        .await
        .expect("the xDS listener accepts");
    let http = reqwest::Client::new();

    assert_eq!(status(&http, format!("{control}/health")).await, 200);
    assert_eq!(status(&http, format!("{admin}/health")).await, 200);

    let registered = http
        .post(format!("{control}/register"))
        .json(&HashMap::from([
            ("service", "web".to_owned()),
            ("address", upstream.to_string()),
        ]))
        .send()
        .await
        .expect("register answers");
    assert_eq!(registered.status(), 201);

    // The sidecar learns of the instance through the change stream: wait for DNS to say so.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while a_records(dns, "web.service.waypost.").await != ["127.0.0.1"] {
        assert!(tokio::time::Instant::now() < deadline, "DNS never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // DNS, the proxies and the admin read one snapshot, so the proxies route now too.
    let proxied = http
        .get(format!("{proxy}/"))
        .header("host", "web")
        .send()
        .await
        .expect("the HTTP proxy answers");
    assert_eq!(proxied.status(), 200);
    assert_eq!(proxied.text().await.expect("a body"), "hello from web");

    let mut stream = TcpStream::connect(route)
        .await
        .expect("the TCP route accepts");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: anything\r\n\r\n")
        .await
        .expect("write through the route");
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .expect("the upstream closes")
        .expect("read through the route");
    assert!(answer.ends_with("hello from web"), "{answer}");

    dev.stop().await;
}

#[tokio::test]
async fn two_devs_run_side_by_side() {
    let first = Dev::start(&[]).await;
    let second = Dev::start(&[]).await;
    let http = reqwest::Client::new();
    for name in [
        "control plane",
        "xDS (gRPC)",
        "DNS",
        "sidecar admin",
        "HTTP proxy",
    ] {
        assert_ne!(first.addr(name), second.addr(name), "{name}");
    }
    for dev in [&first, &second] {
        assert_eq!(
            status(&http, format!("{}/health", dev.addr("control plane"))).await,
            200
        );
        // The banner's dashboard address serves the page.
        assert_eq!(status(&http, dev.addr("dashboard").to_owned()).await, 200);
        // Nothing is registered: each proxy answers with its own 404 for an unknown service.
        let unknown = http
            .get(format!("{}/", dev.addr("HTTP proxy")))
            .header("host", "nothing")
            .send()
            .await
            .expect("the HTTP proxy answers");
        assert_eq!(unknown.status(), 404);
        assert_eq!(
            unknown.headers()["x-waypost-proxy-error"],
            "unknown_service"
        );
    }
    first.stop().await;
    second.stop().await;
}
