//! The control plane's one configuration struct, loaded before anything binds.
//!
//! Layers, lowest first: built-in defaults < TOML file (`--config`) < `WAYPOST_*` environment
//! < command-line flags. [`Settings`] is both the clap argument set (flags and env) and the TOML
//! file's shape, so each setting is declared once; [`Config::from_layers`] merges two of them
//! and applies defaults and checks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use waypost_model::limits::MAX_BLOCKING_WAIT_SECONDS;
use waypost_runtime::{config::ConfigError, logging::LogFormat};

use crate::{
    auth::{AuthSettings, Tokens},
    registry::{VipRange, expiry::SelfPreservation},
    tls::TlsFiles,
};

/// Every setting's default, named once: [`Config::from_layers`] applies them, `waypost dev`
/// uses the listen address, and tests hold the `[default: ...]` of each flag's help and the
/// README's configuration table to them.
pub mod defaults {
    use std::{
        net::{Ipv4Addr, SocketAddr, SocketAddrV4},
        time::Duration,
    };

    use waypost_model::limits::MAX_BLOCKING_WAIT_SECONDS;

    /// `listen`.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000));
    /// The xDS address of `waypost dev` (`xds_listen` itself has no default: no xDS).
    pub const DEV_XDS_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9002));
    /// `data_dir`.
    pub const DATA_DIR: &str = "waypost-data";
    /// `in_memory`.
    pub const IN_MEMORY: bool = false;
    /// `default_ttl`.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
    /// `heartbeat_interval`.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
    /// `self_preservation`.
    pub const SELF_PRESERVATION: bool = true;
    /// `self_preservation_threshold`.
    pub const SELF_PRESERVATION_THRESHOLD: f64 = 0.5;
    /// `self_preservation_window`.
    pub const SELF_PRESERVATION_WINDOW: Duration = Duration::from_secs(30);
    /// `self_preservation_min`.
    pub const SELF_PRESERVATION_MIN: usize = 10;
    /// `self_preservation_max_hold`.
    pub const SELF_PRESERVATION_MAX_HOLD: Duration = Duration::from_secs(300);
    /// `history`.
    pub const HISTORY: usize = 10_000;
    /// `max_instances`.
    pub const MAX_INSTANCES: usize = 1_000_000;
    /// `max_instances_per_service`.
    pub const MAX_INSTANCES_PER_SERVICE: usize = 10_000;
    /// `write_rate`.
    pub const WRITE_RATE: u32 = 1_000;
    /// `write_burst`.
    pub const WRITE_BURST: u32 = 2_000;
    /// `max_connections`.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// `header_read_timeout`.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// `idle_timeout`.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `request_timeout`.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// `max_watchers`.
    pub const MAX_WATCHERS: usize = 10_000;
    /// `watch_buffer`.
    pub const WATCH_BUFFER: usize = 256;
    /// `watch_keepalive`.
    pub const WATCH_KEEPALIVE: Duration = Duration::from_secs(15);
    /// `max_query_time`: the longest blocking wait the API allows.
    pub const MAX_QUERY_TIME: Duration = Duration::from_secs(MAX_BLOCKING_WAIT_SECONDS);
    /// `shutdown_grace`.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// `store_cache_mb`.
    pub const STORE_CACHE_MB: usize = 4;
    /// `vip_cidr`.
    pub const VIP_CIDR: &str = "127.100.0.0/16";
    /// `insecure`.
    pub const INSECURE: bool = false;
    /// `node_id`.
    pub const NODE_ID: u64 = 1;
    /// `join`.
    pub const JOIN: bool = false;
    /// `election_timeout`.
    pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
    /// `snapshot_entries`.
    pub const SNAPSHOT_ENTRIES: u64 = 10_000;
    /// `node_lost_after`: three of the sidecar's default keep-alives (5 s).
    pub const NODE_LOST_AFTER: Duration = Duration::from_secs(15);
    /// `node_forget_after`.
    pub const NODE_FORGET_AFTER: Duration = Duration::from_secs(3_600);
    /// `max_nodes`.
    pub const MAX_NODES: usize = 10_000;
}

/// Every setting, optional, as given by one layer.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:9000].
    #[arg(long, env = "WAYPOST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address to serve xDS on (gRPC, the Aggregated Discovery Service) for proxyless gRPC
    /// clients; none: no xDS [default: none].
    #[arg(long, env = "WAYPOST_XDS_LISTEN")]
    pub xds_listen: Option<SocketAddr>,
    /// Directory of the durable store [default: waypost-data].
    #[arg(long, env = "WAYPOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep state in memory only (lost on exit) [default: false].
    #[arg(long, env = "WAYPOST_IN_MEMORY", num_args = 0..=1, default_missing_value = "true")]
    pub in_memory: Option<bool>,
    /// TTL of registrations that give none [default: 30s].
    #[arg(long, env = "WAYPOST_DEFAULT_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub default_ttl: Option<Duration>,
    /// Heartbeat interval suggested to clients [default: 10s].
    #[arg(long, env = "WAYPOST_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub heartbeat_interval: Option<Duration>,
    /// Hold expiry when too many instances would expire at once [default: true].
    #[arg(long, env = "WAYPOST_SELF_PRESERVATION", num_args = 0..=1, default_missing_value = "true")]
    pub self_preservation: Option<bool>,
    /// Share of instances that may expire within one window before expiry is held [default: 0.5].
    #[arg(long, env = "WAYPOST_SELF_PRESERVATION_THRESHOLD")]
    pub self_preservation_threshold: Option<f64>,
    /// The window over which expiries are counted [default: 30s].
    #[arg(long, env = "WAYPOST_SELF_PRESERVATION_WINDOW", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub self_preservation_window: Option<Duration>,
    /// Fewer expiries than this in a window are never held [default: 10].
    #[arg(long, env = "WAYPOST_SELF_PRESERVATION_MIN")]
    pub self_preservation_min: Option<usize>,
    /// The longest self-preservation holds an instance; after it, held instances expire at
    /// the threshold's rate (at most that share per window) [default: 5m].
    #[arg(long, env = "WAYPOST_SELF_PRESERVATION_MAX_HOLD", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub self_preservation_max_hold: Option<Duration>,
    /// Changes kept for `/watch` clients to resume from [default: 10000].
    #[arg(long, env = "WAYPOST_HISTORY")]
    pub history: Option<usize>,
    /// Most instances held at once [default: 1000000].
    #[arg(long, env = "WAYPOST_MAX_INSTANCES")]
    pub max_instances: Option<usize>,
    /// Most instances in one service [default: 10000].
    #[arg(long, env = "WAYPOST_MAX_INSTANCES_PER_SERVICE")]
    pub max_instances_per_service: Option<usize>,
    /// Writes (POST) per second allowed to one client address; 0 turns the limit off
    /// [default: 1000].
    #[arg(long, env = "WAYPOST_WRITE_RATE")]
    pub write_rate: Option<u32>,
    /// Writes one client address may send at once above its rate [default: 2000].
    #[arg(long, env = "WAYPOST_WRITE_BURST")]
    pub write_burst: Option<u32>,
    /// Most HTTP connections open at once; more wait to be accepted [default: 10000].
    #[arg(long, env = "WAYPOST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers [default: 10s].
    #[arg(long, env = "WAYPOST_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub header_read_timeout: Option<Duration>,
    /// An HTTP connection with no new request for this long is closed; an answer in progress
    /// (a `/watch` stream, a blocking query) finishes first [default: 60s].
    #[arg(long, env = "WAYPOST_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Time to receive a write's body and answer it [default: 30s].
    #[arg(long, env = "WAYPOST_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub request_timeout: Option<Duration>,
    /// Most `/watch` streams open at once [default: 10000].
    #[arg(long, env = "WAYPOST_MAX_WATCHERS")]
    pub max_watchers: Option<usize>,
    /// Events queued for one `/watch` stream; a stream whose reader lets more pile up is taken
    /// off the live fan-out and reads the change log at its own pace [default: 256].
    #[arg(long, env = "WAYPOST_WATCH_BUFFER")]
    pub watch_buffer: Option<usize>,
    /// Interval of keep-alive comments on idle `/watch` streams [default: 15s].
    #[arg(long, env = "WAYPOST_WATCH_KEEPALIVE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub watch_keepalive: Option<Duration>,
    /// The longest a blocking query is held, whatever its `wait` [default: 10m].
    #[arg(long, env = "WAYPOST_MAX_QUERY_TIME", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub max_query_time: Option<Duration>,
    /// How long shutdown waits for in-flight requests [default: 10s].
    #[arg(long, env = "WAYPOST_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub shutdown_grace: Option<Duration>,
    /// Page cache of the store in MiB [default: 4].
    #[arg(long, env = "WAYPOST_STORE_CACHE_MB")]
    pub store_cache_mb: Option<usize>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "WAYPOST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// IPv4 range of services' virtual IPs, `a.b.c.d/len`, or `off` [default: 127.100.0.0/16]
    #[arg(long, env = "WAYPOST_VIP_CIDR")]
    pub vip_cidr: Option<String>,
    /// Listen on a non-loopback address without auth tokens (anyone who can connect may
    /// change any service) [default: false].
    #[arg(long, env = "WAYPOST_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); without it, plain HTTP
    /// [default: none].
    #[arg(long, env = "WAYPOST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` [default: none].
    #[arg(long, env = "WAYPOST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, clients must present a certificate it signed (mTLS)
    /// [default: none].
    #[arg(long, env = "WAYPOST_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// This node's id in a cluster [default: 1].
    #[arg(long, env = "WAYPOST_NODE_ID")]
    pub node_id: Option<u64>,
    /// Every voting member of the cluster as `id=URL` pairs, this node included, for example
    /// `1=http://10.0.0.1:9000,2=http://10.0.0.2:9000,3=http://10.0.0.3:9000`; none: a
    /// cluster of one [default: none].
    #[arg(long, env = "WAYPOST_PEERS")]
    pub peers: Option<String>,
    /// Start without initialising a cluster, and wait to be added to a running one with
    /// `POST /cluster/members` [default: false].
    #[arg(long, env = "WAYPOST_JOIN", num_args = 0..=1, default_missing_value = "true")]
    pub join: Option<bool>,
    /// Raft election timeout: a follower that hears nothing from the leader for 0.8 to 1.4 of
    /// it (at random) starts an election [default: 1s].
    #[arg(long, env = "WAYPOST_ELECTION_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub election_timeout: Option<Duration>,
    /// Snapshot the state machine after this many log entries, and purge the log before the
    /// snapshot (a node that falls further behind catches up from the snapshot)
    /// [default: 10000].
    #[arg(long, env = "WAYPOST_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// The bearer token this node presents to its peers when authorization is on (a token
    /// with the `cluster` role in their `[auth]` tables); prefer the environment or the file
    /// [default: none].
    #[arg(long, env = "WAYPOST_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// PEM CA certificates that sign the peers' HTTPS certificates [default: system roots].
    #[arg(long, env = "WAYPOST_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// A sidecar not heard from for this long is shown `lost` in `/nodes` and is no longer
    /// waited for by `?wait=propagated` [default: 15s].
    #[arg(long, env = "WAYPOST_NODE_LOST_AFTER", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub node_lost_after: Option<Duration>,
    /// A sidecar not heard from for this long is dropped from `/nodes` [default: 1h].
    #[arg(long, env = "WAYPOST_NODE_FORGET_AFTER", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub node_forget_after: Option<Duration>,
    /// Most sidecars known at once; a new one beyond is refused with 503 `too_many_nodes`
    /// [default: 10000].
    #[arg(long, env = "WAYPOST_MAX_NODES")]
    pub max_nodes: Option<usize>,
    /// Bearer tokens and their roles: the `[auth]` table of the config file only (tokens do
    /// not belong in flags or the environment of every process).
    #[arg(skip)]
    pub auth: Option<AuthSettings>,
}

/// The command line of `waypost-control`.
#[derive(Debug, Parser)]
#[command(
    name = "waypost-control",
    version,
    about = "Waypost control plane: service registry server"
)]
pub struct Cli {
    /// A TOML file with settings (lowest priority after the defaults).
    #[arg(long, env = "WAYPOST_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Settings; each flag also reads the `WAYPOST_*` variable shown.
    #[command(flatten)]
    pub settings: Settings,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the OpenAPI document, or write it to a file.
    Openapi {
        /// Write here instead of standard output (e.g. openapi/openapi.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read a token from standard input (one line) and print the SHA-256 digest that
    /// `[[auth.tokens]]` entries take as `sha256`.
    HashToken,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    /// Serve with this configuration.
    Serve(Box<Config>),
    /// Run a subcommand that does not serve.
    Command(Command),
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// The xDS listen address (`None`: no xDS).
    pub xds_listen: Option<SocketAddr>,
    /// Store directory; `None` in memory mode.
    pub data_dir: Option<PathBuf>,
    /// TTL of registrations that give none.
    pub default_ttl: Duration,
    /// Suggested heartbeat interval.
    pub heartbeat_interval: Duration,
    /// The self-preservation rule.
    pub self_preservation: SelfPreservation,
    /// Changes kept for resuming watchers.
    pub history: usize,
    /// Most instances.
    pub max_instances: usize,
    /// Most instances in one service.
    pub max_instances_per_service: usize,
    /// Most `/watch` streams at once.
    pub max_watchers: usize,
    /// Most HTTP connections at once.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: Duration,
    /// See [`Settings::idle_timeout`].
    pub idle_timeout: Duration,
    /// Time to receive a write and answer it.
    pub request_timeout: Duration,
    /// Writes per second per client address (0: no limit).
    pub write_rate: u32,
    /// Writes above the rate a client may send at once.
    pub write_burst: u32,
    /// Events queued per `/watch` stream before it leaves the live fan-out.
    pub watch_buffer: usize,
    /// Keep-alive interval on `/watch`.
    pub watch_keepalive: Duration,
    /// The longest a blocking query is held.
    pub max_query_time: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Store page cache in bytes.
    pub store_cache_bytes: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Where services' virtual IPs come from (`None`: off).
    pub vip_range: Option<VipRange>,
    /// HTTPS files (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// The configured tokens (none: authorization is off).
    pub tokens: Tokens,
    /// Whether serving a non-loopback address without tokens was asked for.
    pub insecure: bool,
    /// Cluster membership and Raft timing.
    pub cluster: ClusterConfig,
    /// The sidecars' table.
    pub nodes: crate::nodes::NodesConfig,
}

/// This node's place in a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u64,
    /// The voting members (id and base URL), this node included; empty: a cluster of one.
    pub peers: Vec<(u64, String)>,
    /// See [`Settings::join`].
    pub join: bool,
    /// See [`Settings::election_timeout`].
    pub election_timeout: Duration,
    /// See [`Settings::snapshot_entries`].
    pub snapshot_entries: u64,
    /// See [`Settings::cluster_token`].
    pub token: Option<String>,
    /// See [`Settings::peer_ca`].
    pub peer_ca: Option<PathBuf>,
}

/// Parses `1=http://a:9000,2=http://b:9000`.
fn parse_peers(text: &str) -> Result<Vec<(u64, String)>, String> {
    let mut peers: Vec<(u64, String)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part
            .split_once('=')
            .ok_or_else(|| format!("peers: {part:?} is not id=URL"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peers: {id:?} is not a node id (a number)"))?;
        let url = url.trim().trim_end_matches('/');
        let parsed =
            url::Url::parse(url).map_err(|e| format!("peers: {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!("peers: {url:?} must be an http:// or https:// URL"));
        }
        if peers.iter().any(|(other, _)| *other == id) {
            return Err(format!("peers: node id {id} is given twice"));
        }
        peers.push((id, url.to_owned()));
    }
    Ok(peers)
}

impl Config {
    /// Parses flags and env (`args` as from `std::env::args_os`); for serving, reads the TOML
    /// file if one is named and merges. Subcommands that do not serve (`openapi`,
    /// `hash-token`) are returned before the settings are checked, so that a config that would
    /// be refused (a non-loopback address still waiting for its tokens) does not stop them.
    /// Pure except for reading that file.
    pub fn load<I, T>(args: I) -> Result<Action, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli: Cli = waypost_runtime::config::parse_args(args)?;
        match cli.command {
            None | Some(Command::Serve) => {}
            Some(command) => return Ok(Action::Command(command)),
        }
        let file: Settings = waypost_runtime::config::read_toml(cli.config.as_deref())?;
        Ok(Action::Serve(Box::new(Self::from_layers(
            cli.settings,
            file,
        )?)))
    }

    /// Merges `over` (flags and env) onto `under` (file), then applies defaults and checks.
    pub fn from_layers(over: Settings, under: Settings) -> Result<Config, ConfigError> {
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                over.$field.or(under.$field).unwrap_or($default)
            };
        }
        let in_memory = pick!(in_memory, defaults::IN_MEMORY);
        let config = Config {
            listen: pick!(listen, defaults::LISTEN),
            xds_listen: over.xds_listen.or(under.xds_listen),
            data_dir: (!in_memory).then(|| pick!(data_dir, PathBuf::from(defaults::DATA_DIR))),
            default_ttl: pick!(default_ttl, defaults::DEFAULT_TTL),
            heartbeat_interval: pick!(heartbeat_interval, defaults::HEARTBEAT_INTERVAL),
            self_preservation: SelfPreservation {
                enabled: pick!(self_preservation, defaults::SELF_PRESERVATION),
                threshold: pick!(
                    self_preservation_threshold,
                    defaults::SELF_PRESERVATION_THRESHOLD
                ),
                window: pick!(self_preservation_window, defaults::SELF_PRESERVATION_WINDOW),
                min_instances: pick!(self_preservation_min, defaults::SELF_PRESERVATION_MIN),
                max_hold: pick!(
                    self_preservation_max_hold,
                    defaults::SELF_PRESERVATION_MAX_HOLD
                ),
            },
            history: pick!(history, defaults::HISTORY),
            max_instances: pick!(max_instances, defaults::MAX_INSTANCES),
            max_instances_per_service: pick!(
                max_instances_per_service,
                defaults::MAX_INSTANCES_PER_SERVICE
            ),
            max_watchers: pick!(max_watchers, defaults::MAX_WATCHERS),
            max_connections: pick!(max_connections, defaults::MAX_CONNECTIONS),
            header_read_timeout: pick!(header_read_timeout, defaults::HEADER_READ_TIMEOUT),
            idle_timeout: pick!(idle_timeout, defaults::IDLE_TIMEOUT),
            request_timeout: pick!(request_timeout, defaults::REQUEST_TIMEOUT),
            write_rate: pick!(write_rate, defaults::WRITE_RATE),
            write_burst: pick!(write_burst, defaults::WRITE_BURST),
            watch_buffer: pick!(watch_buffer, defaults::WATCH_BUFFER),
            watch_keepalive: pick!(watch_keepalive, defaults::WATCH_KEEPALIVE),
            max_query_time: pick!(max_query_time, defaults::MAX_QUERY_TIME),
            shutdown_grace: pick!(shutdown_grace, defaults::SHUTDOWN_GRACE),
            store_cache_bytes: pick!(store_cache_mb, defaults::STORE_CACHE_MB) * 1024 * 1024,
            log_format: pick!(log_format, LogFormat::Text),
            vip_range: match over.vip_cidr.or(under.vip_cidr).as_deref() {
                None => Some(
                    defaults::VIP_CIDR
                        .parse()
                        .unwrap_or_else(|e| unreachable!("the default range parses: {e}")),
                ),
                Some("off") => None,
                Some(text) => Some(text.parse().map_err(ConfigError::Invalid)?),
            },
            tokens: Tokens::from_settings(&over.auth.or(under.auth).unwrap_or_default())
                .map_err(ConfigError::Invalid)?,
            insecure: pick!(insecure, defaults::INSECURE),
            cluster: ClusterConfig {
                node_id: pick!(node_id, defaults::NODE_ID),
                peers: match over.peers.or(under.peers) {
                    Some(text) => parse_peers(&text).map_err(ConfigError::Invalid)?,
                    None => Vec::new(),
                },
                join: pick!(join, defaults::JOIN),
                election_timeout: pick!(election_timeout, defaults::ELECTION_TIMEOUT),
                snapshot_entries: pick!(snapshot_entries, defaults::SNAPSHOT_ENTRIES),
                token: over.cluster_token.or(under.cluster_token),
                peer_ca: over.peer_ca.or(under.peer_ca),
            },
            nodes: crate::nodes::NodesConfig {
                lost_after: pick!(node_lost_after, defaults::NODE_LOST_AFTER),
                forget_after: pick!(node_forget_after, defaults::NODE_FORGET_AFTER),
                max_nodes: pick!(max_nodes, defaults::MAX_NODES),
            },
            tls: match (
                over.tls_cert.or(under.tls_cert),
                over.tls_key.or(under.tls_key),
                over.tls_client_ca.or(under.tls_client_ca),
            ) {
                (None, None, None) => None,
                (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca,
                }),
                _ => {
                    return Err(ConfigError::Invalid(
                        "tls_cert and tls_key go together, and tls_client_ca needs them".into(),
                    ));
                }
            },
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let ttl = self.default_ttl.as_secs();
        if !(1..=86_400).contains(&ttl) || self.default_ttl.subsec_nanos() != 0 {
            return bad(format!(
                "default_ttl must be whole seconds from 1s to 24h, not {:?}",
                self.default_ttl
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.default_ttl {
            return bad("heartbeat_interval must be above zero and below default_ttl".into());
        }
        let t = self.self_preservation.threshold;
        if !(t > 0.0 && t <= 1.0) {
            return bad(format!(
                "self_preservation_threshold must be in (0, 1], not {t}"
            ));
        }
        if self.self_preservation.max_hold.is_zero() {
            return bad("self_preservation_max_hold must be above zero".into());
        }
        if self.history == 0
            || self.max_instances == 0
            || self.max_instances_per_service == 0
            || self.max_watchers == 0
            || self.watch_buffer == 0
            || self.max_connections == 0
            || self.header_read_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.request_timeout.is_zero()
        {
            return bad(
                "history, max_instances, max_instances_per_service, max_watchers, watch_buffer, max_connections, header_read_timeout, idle_timeout and request_timeout must be above zero"
                    .into(),
            );
        }
        if self.max_query_time.is_zero()
            || self.max_query_time > Duration::from_secs(MAX_BLOCKING_WAIT_SECONDS)
        {
            return bad(format!(
                "max_query_time must be above zero and at most {MAX_BLOCKING_WAIT_SECONDS}s, not {:?}",
                self.max_query_time
            ));
        }
        self.check_exposure().map_err(ConfigError::Invalid)?;
        if self.watch_keepalive.is_zero() {
            return bad("watch_keepalive must be above zero".into());
        }
        let n = &self.nodes;
        if n.lost_after.is_zero() || n.forget_after < n.lost_after || n.max_nodes == 0 {
            return bad(
                "node_lost_after and max_nodes must be above zero, and node_forget_after at least node_lost_after"
                    .into(),
            );
        }
        let c = &self.cluster;
        if !c.peers.is_empty() && !c.peers.iter().any(|(id, _)| *id == c.node_id) {
            return bad(format!(
                "peers must include this node (node_id {}): list every voting member",
                c.node_id
            ));
        }
        if c.snapshot_entries == 0 {
            return bad("snapshot_entries must be above zero".into());
        }
        if c.election_timeout < Duration::from_millis(100)
            || c.election_timeout > Duration::from_secs(60)
        {
            return bad(format!(
                "election_timeout must be from 100ms to 60s, not {:?}",
                c.election_timeout
            ));
        }
        Ok(())
    }

    /// Refuses a non-loopback listen address without tokens unless `insecure` is set. Part of
    /// the checks at load, and checked again by [`crate::start`] for configurations built in
    /// code (`waypost dev`).
    pub fn check_exposure(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && !self.tokens.enabled() && !self.insecure {
            return Err(format!(
                "refusing to listen on {} without auth tokens: anyone who can reach it could \
                 deregister any service. Add [[auth.tokens]] to the config file (see the README, \
                 Authorization), listen on a loopback address, or pass --insecure",
                self.listen
            ));
        }
        Ok(())
    }

    /// For tests: `127.0.0.1:0`, the given data directory (or memory), short timers.
    pub fn for_test(data_dir: Option<PathBuf>) -> Config {
        let mut c = Self::from_layers(Settings::default(), Settings::default())
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"));
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.data_dir = data_dir;
        c.shutdown_grace = Duration::from_secs(3);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], file: &str) -> Result<Config, ConfigError> {
        let cli =
            Cli::try_parse_from(std::iter::once("waypost-control").chain(args.iter().copied()))
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let file: Settings = waypost_runtime::config::parse_toml(file)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Config::from_layers(cli.settings, file)
    }

    #[test]
    fn defaults() {
        let c = load(&[], "").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data_dir, Some(PathBuf::from("waypost-data")));
        assert_eq!(c.default_ttl, Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert!(c.self_preservation.enabled);
        assert_eq!(c.self_preservation.threshold, 0.5);
    }

    #[test]
    fn flags_override_the_file() {
        let file = "listen = \"127.0.0.1:7000\"\ndefault_ttl = \"60s\"\nhistory = 5\n";
        let c = load(&["--listen", "127.0.0.1:7100"], file).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7100");
        assert_eq!(c.default_ttl, Duration::from_secs(60));
        assert_eq!(c.history, 5);
    }

    #[test]
    fn in_memory_drops_the_data_dir() {
        let c = load(&["--in-memory"], "data_dir = \"/x\"").unwrap();
        assert_eq!(c.data_dir, None);
        let c = load(&["--in-memory", "false"], "data_dir = \"/x\"").unwrap();
        assert_eq!(c.data_dir, Some(PathBuf::from("/x")));
    }

    /// A flag's `[default: ...]` is the value applied without it, and the README's table
    /// gives the same default.
    #[test]
    fn each_documented_default_is_applied_and_in_the_readme() {
        use clap::CommandFactory;
        let checked = waypost_runtime::config::check_documented_defaults(
            &Cli::command(),
            include_str!("../../README.md"),
            |args| load(args, ""),
        )
        .unwrap();
        assert!(checked > 30, "{checked}");
    }

    #[test]
    fn the_readme_documents_every_setting() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        for arg in Cli::command().get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            let env = env.to_string_lossy();
            if long == "config" {
                continue;
            }
            let key = long.replace('-', "_");
            let row = format!("| `{key}` / `--{long}` | `{env}` |");
            assert!(
                readme.contains(&row),
                "README.md lacks the config row starting {row}"
            );
        }
    }

    #[test]
    fn non_loopback_addresses_need_tokens_or_insecure() {
        let err = load(&["--listen", "0.0.0.0:9000"], "").unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(load(&["--listen", "[::]:9000"], "").is_err());
        assert!(load(&["--listen", "[::1]:9000"], "").is_ok());
        assert_eq!(
            load(&[], "xds_listen = \"127.0.0.1:9002\"")
                .unwrap()
                .xds_listen,
            Some("127.0.0.1:9002".parse().unwrap())
        );
        let c = load(&["--listen", "0.0.0.0:9000", "--insecure"], "").unwrap();
        assert!(c.insecure && !c.tokens.enabled());
        let file = format!(
            "[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"operator\"\n\n\
             [[auth.tokens]]\nname = \"pay\"\nsha256 = \"{}\"\nrole = \"service\"\n\
             services = [\"payments\", \"billing-*\"]\n",
            crate::auth::hash_token("a"),
            crate::auth::hash_token("b"),
        );
        let c = load(&["--listen", "0.0.0.0:9000"], &file).unwrap();
        assert!(c.tokens.enabled());
        assert_eq!(c.tokens.find("b").unwrap().name, "pay");
        assert!(
            load(
                &[],
                "[[auth.tokens]]\nname = \"x\"\nsha256 = \"00\"\nrole = \"read\"\n"
            )
            .is_err()
        );
        assert!(
            load(
                &[],
                "[[auth.tokens]]\nname = \"x\"\ntoken = \"plain\"\nrole = \"read\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (args, file) in [
            (&["--default-ttl", "0s"][..], ""),
            (&["--default-ttl", "1500ms"][..], ""),
            (&["--heartbeat-interval", "40s"][..], ""),
            (&["--self-preservation-threshold", "1.5"][..], ""),
            (&["--listen", "nope"][..], ""),
            (&[][..], "unknown_key = 1"),
            (&[][..], "default_ttl = \"soon\""),
        ] {
            assert!(load(args, file).is_err(), "{args:?} {file:?} should fail");
        }
    }
}
