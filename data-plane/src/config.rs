//! The sidecar's one configuration struct, loaded before anything binds.
//!
//! Layers, lowest first: built-in defaults < TOML file (`--config`) < `WAYPOST_*` environment
//! < command-line flags, as for the control plane. [`Settings`] is both the clap argument set
//! and the TOML file's shape.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser};
use hickory_proto::rr::Name;
use serde::Deserialize;
use waypost_runtime::{
    config::{ConfigError, Secret},
    logging::LogFormat,
};

use crate::checks::CheckConfig;
use crate::dns::tcp::TcpLimits;
use crate::proxy::{
    ProxyConfig,
    balance::{Outlier, Policy},
    tcp::TcpRoute,
};

/// The sidecar's own defaults, named once: [`Config::from_layers`] applies them, `waypost dev`
/// uses the addresses, and tests hold each flag's `[default: ...]` and the README's table to
/// them. The proxies' and DNS-over-TCP's are their types' `Default`s.
pub mod defaults {
    use std::{
        net::{Ipv4Addr, SocketAddr, SocketAddrV4},
        time::Duration,
    };

    /// `control`: the control plane's default address.
    pub const CONTROL: &str = "http://127.0.0.1:9000";
    /// `admin_listen`.
    pub const ADMIN_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100));
    /// `dns_listen`.
    pub const DNS_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8600));
    /// `http_listen`.
    pub const HTTP_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));
    /// `domain`.
    pub const DOMAIN: &str = "waypost.";
    /// `dns_ttl`.
    pub const DNS_TTL: Duration = Duration::from_secs(5);
    /// `data_dir`.
    pub const DATA_DIR: &str = "waypost-sidecar-data";
    /// `deregister_critical_after`.
    pub const DEREGISTER_CRITICAL_AFTER: Duration = Duration::from_secs(600);
    /// `shutdown_grace`.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
    /// `report_keepalive`.
    pub const REPORT_KEEPALIVE: Duration = Duration::from_secs(5);
}

/// Every setting, each optional so that layers can be merged.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Control-plane base URLs, comma-separated (fail-over in order) [default: http://127.0.0.1:9000]
    #[arg(long, env = "WAYPOST_CONTROL", value_delimiter = ',')]
    pub control: Option<Vec<String>>,
    /// Admin HTTP listener (/health, /ready, /metrics, /snapshot) [default: 127.0.0.1:9100]
    #[arg(long, env = "WAYPOST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// DNS listener, UDP and TCP on the same address [default: 127.0.0.1:8600]
    #[arg(long, env = "WAYPOST_DNS_LISTEN")]
    pub dns_listen: Option<SocketAddr>,
    /// The DNS domain answered [default: waypost.]
    #[arg(long, env = "WAYPOST_DOMAIN")]
    pub domain: Option<String>,
    /// TTL of the DNS answers [default: 5s]
    #[arg(long, env = "WAYPOST_DNS_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub dns_ttl: Option<Duration>,
    /// Resolvers for names outside the domain, comma-separated `ip:port`; none: REFUSED [default: none]
    #[arg(long, env = "WAYPOST_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Option<Vec<SocketAddr>>,
    /// A DNS-over-TCP connection that delivers no well-formed query for this long is closed [default: 10s]
    #[arg(long, env = "WAYPOST_DNS_TCP_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub dns_tcp_idle_timeout: Option<Duration>,
    /// DNS-over-TCP connections served at once; further ones wait in the listen backlog [default: 512]
    #[arg(long, env = "WAYPOST_DNS_TCP_MAX_CONNECTIONS")]
    pub dns_tcp_max_connections: Option<usize>,
    /// Where the last snapshot is kept, to serve from at a start without the control plane [default: waypost-sidecar-data]
    #[arg(long, env = "WAYPOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP proxy listener [default: 127.0.0.1:8081]
    #[arg(long, env = "WAYPOST_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Also route `/<service>/...` when the Host header names no service [default: false]
    #[arg(long, env = "WAYPOST_ROUTE_BY_PATH", num_args = 0..=1, default_missing_value = "true")]
    pub route_by_path: Option<bool>,
    /// Balancing: least_request (power of two choices), round_robin or weighted [default: least_request]
    #[arg(long, env = "WAYPOST_BALANCE")]
    pub balance: Option<Policy>,
    /// Connecting to an instance [default: 1s]
    #[arg(long, env = "WAYPOST_CONNECT_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// From request to response headers [default: 15s]
    #[arg(long, env = "WAYPOST_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub request_timeout: Option<Duration>,
    /// A response body silent this long is cut; idle upstream and client connections close
    /// [default: 60s]
    #[arg(long, env = "WAYPOST_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// A client connection that has not sent its first request's headers this long after
    /// the accept is closed [default: 10s]
    #[arg(long, env = "WAYPOST_CLIENT_HEADER_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub client_header_timeout: Option<Duration>,
    /// Most HTTP proxy client connections open at once; more wait to be accepted
    /// [default: 10000]
    #[arg(long, env = "WAYPOST_MAX_CLIENT_CONNECTIONS")]
    pub max_client_connections: Option<usize>,
    /// Consecutive failures that eject an instance [default: 5]
    #[arg(long, env = "WAYPOST_OUTLIER_FAILURES")]
    pub outlier_failures: Option<u32>,
    /// First ejection's length; it grows with each ejection, up to 5m [default: 10s]
    #[arg(long, env = "WAYPOST_OUTLIER_EJECTION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub outlier_ejection: Option<Duration>,
    /// Below this share of usable instances, balance over all of them [default: 0.5]
    #[arg(long, env = "WAYPOST_PANIC_THRESHOLD")]
    pub panic_threshold: Option<f64>,
    /// Retries may add at most this share of requests [default: 0.2]
    #[arg(long, env = "WAYPOST_RETRY_BUDGET")]
    pub retry_budget: Option<f64>,
    /// TCP routes LISTEN=SERVICE, comma-separated (TOML: `[[tcp]]` tables with `listen` and `service`) [default: none]
    #[arg(long, env = "WAYPOST_TCP", value_delimiter = ',')]
    pub tcp: Option<Vec<TcpRoute>>,
    /// VIP mode: listen on each service's virtual IP (on every port its instances use) and answer its DNS name with the VIP [default: false]
    #[arg(long, env = "WAYPOST_VIP_MODE", num_args = 0..=1, default_missing_value = "true")]
    pub vip_mode: Option<bool>,
    /// This host's node name: the checks of instances registered with it run here [default: none]
    #[arg(long, env = "WAYPOST_NODE")]
    pub node: Option<String>,
    /// Report to the control plane (`PUT /nodes/{node}`, named by `node`, else the host name)
    /// at once when the applied revision or staleness changes, and at this interval otherwise;
    /// 0s turns reports off [default: 5s]
    #[arg(long, env = "WAYPOST_REPORT_KEEPALIVE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub report_keepalive: Option<Duration>,
    /// Run the checks of every instance (a single host) [default: false]
    #[arg(long, env = "WAYPOST_CHECK_ALL", num_args = 0..=1, default_missing_value = "true")]
    pub check_all: Option<bool>,
    /// Deregister an instance whose check stays critical this long; 0s never [default: 10m]
    #[arg(long, env = "WAYPOST_DEREGISTER_CRITICAL_AFTER", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub deregister_critical_after: Option<Duration>,
    /// How long shutdown waits for in-flight work [default: 5s]
    #[arg(long, env = "WAYPOST_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    #[serde(default, with = "waypost_runtime::config::opt_duration")]
    pub shutdown_grace: Option<Duration>,
    /// `text` or `json` [default: text]
    #[arg(long, env = "WAYPOST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Threads serving traffic, 1 to 1024; with 1, a single-threaded scheduler
    /// [default: the CPUs the process may use]
    #[arg(long, env = "WAYPOST_WORKERS")]
    pub workers: Option<usize>,
    /// Bearer token for a control plane with authorization on (read role, or a service
    /// token covering the checked services); prefer the environment or the file to the flag
    /// [default: none]
    #[arg(long, env = "WAYPOST_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// PEM CA certificates HTTPS health checks trust besides the system's [default: none]
    #[arg(long, env = "WAYPOST_CHECK_CA_CERT")]
    pub check_ca_cert: Option<PathBuf>,
    /// PEM CA certificates to trust for `https://` control URLs instead of the system's [default: none]
    #[arg(long, env = "WAYPOST_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for a control plane that requires one (mTLS), with `client_key` [default: none]
    #[arg(long, env = "WAYPOST_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` [default: none]
    #[arg(long, env = "WAYPOST_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "waypost-sidecar",
    version,
    about = "Waypost sidecar: follows the control plane and answers DNS for its services"
)]
pub struct Cli {
    /// A TOML file with any of the settings below (flags and env override it).
    #[arg(long, env = "WAYPOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// The settings given as flags or environment variables.
    #[command(flatten)]
    pub settings: Settings,
}

/// The merged configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Control-plane base URLs.
    pub control: Vec<String>,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// DNS listener (UDP and TCP).
    pub dns_listen: SocketAddr,
    /// The domain, fully qualified and lowercase (`waypost.`).
    pub domain: Name,
    /// TTL of answers.
    pub dns_ttl: Duration,
    /// Upstream resolvers for other names.
    pub upstreams: Vec<SocketAddr>,
    /// Limits on DNS-over-TCP connections.
    pub dns_tcp: TcpLimits,
    /// Snapshot directory; `None` keeps nothing on disk.
    pub data_dir: Option<PathBuf>,
    /// HTTP proxy listener.
    pub http_listen: SocketAddr,
    /// The proxies' settings.
    pub proxy: ProxyConfig,
    /// Explicit TCP routes.
    pub tcp: Vec<TcpRoute>,
    /// Which health checks run here.
    pub checks: CheckConfig,
    /// The keep-alive of the reports to the control plane (zero: no reports).
    pub report_keepalive: Duration,
    /// Serve services on their virtual IPs.
    pub vip_mode: bool,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Worker threads of the binary's runtime (`main` builds it; [`start`](crate::start) runs
    /// on whatever runtime calls it).
    pub workers: usize,
    /// Bearer token sent to the control plane.
    pub token: Option<Secret>,
    /// CA certificates for `https://` control URLs.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Config {
    /// Parses flags and env (`args` as from `std::env::args_os`), reads the TOML file if one is
    /// named, and merges.
    pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli: Cli = waypost_runtime::config::parse_args(args)?;
        let file: Settings = waypost_runtime::config::read_toml(cli.config.as_deref())?;
        Self::from_layers(cli.settings, file)
    }

    /// Merges `over` (flags and env) onto `under` (file), then applies defaults and checks.
    pub fn from_layers(over: Settings, under: Settings) -> Result<Config, ConfigError> {
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                over.$field.or(under.$field).unwrap_or_else(|| $default)
            };
        }
        let domain_text = pick!(domain, defaults::DOMAIN.to_owned());
        let config = Config {
            control: pick!(control, vec![defaults::CONTROL.to_owned()]),
            admin_listen: pick!(admin_listen, defaults::ADMIN_LISTEN),
            dns_listen: pick!(dns_listen, defaults::DNS_LISTEN),
            domain: parse_domain(&domain_text)?,
            dns_ttl: pick!(dns_ttl, defaults::DNS_TTL),
            upstreams: pick!(upstreams, Vec::new()),
            dns_tcp: {
                let d = TcpLimits::default();
                TcpLimits {
                    idle_timeout: pick!(dns_tcp_idle_timeout, d.idle_timeout),
                    max_connections: pick!(dns_tcp_max_connections, d.max_connections),
                }
            },
            data_dir: Some(pick!(data_dir, PathBuf::from(defaults::DATA_DIR))),
            http_listen: pick!(http_listen, defaults::HTTP_LISTEN),
            proxy: {
                let d = ProxyConfig::default();
                ProxyConfig {
                    route_by_path: pick!(route_by_path, d.route_by_path),
                    balance: pick!(balance, d.balance),
                    connect_timeout: pick!(connect_timeout, d.connect_timeout),
                    request_timeout: pick!(request_timeout, d.request_timeout),
                    idle_timeout: pick!(idle_timeout, d.idle_timeout),
                    client_header_timeout: pick!(client_header_timeout, d.client_header_timeout),
                    max_client_connections: pick!(max_client_connections, d.max_client_connections),
                    outlier: Outlier {
                        failures: pick!(outlier_failures, d.outlier.failures),
                        base: pick!(outlier_ejection, d.outlier.base),
                        max: d.outlier.max,
                    },
                    panic_threshold: pick!(panic_threshold, d.panic_threshold),
                    retry_budget: pick!(retry_budget, d.retry_budget),
                }
            },
            tcp: pick!(tcp, Vec::new()),
            vip_mode: pick!(vip_mode, false),
            checks: CheckConfig {
                node: over.node.or(under.node),
                check_all: pick!(check_all, false),
                deregister_critical_after: pick!(
                    deregister_critical_after,
                    defaults::DEREGISTER_CRITICAL_AFTER
                ),
                ca_cert: over.check_ca_cert.or(under.check_ca_cert),
            },
            report_keepalive: pick!(report_keepalive, defaults::REPORT_KEEPALIVE),
            shutdown_grace: pick!(shutdown_grace, defaults::SHUTDOWN_GRACE),
            log_format: pick!(log_format, LogFormat::Text),
            workers: pick!(
                workers,
                std::thread::available_parallelism().map_or(1, usize::from)
            ),
            token: over.token.or(under.token),
            ca_cert: over.ca_cert.or(under.ca_cert),
            client_cert: match (
                over.client_cert.or(under.client_cert),
                over.client_key.or(under.client_key),
            ) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some((cert, key)),
                _ => {
                    return Err(ConfigError::Invalid(
                        "client_cert and client_key go together".into(),
                    ));
                }
            },
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.control.is_empty() {
            return Err(ConfigError::Invalid("give at least one control URL".into()));
        }
        let ttl = self.dns_ttl.as_secs();
        if ttl > 86_400 || self.dns_ttl.subsec_nanos() != 0 {
            return Err(ConfigError::Invalid(format!(
                "dns_ttl must be whole seconds up to 24h, not {:?}",
                self.dns_ttl
            )));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(ConfigError::Invalid(format!(
                "workers must be from 1 to {MAX_WORKERS}, not {}",
                self.workers
            )));
        }
        if self.dns_tcp.idle_timeout.is_zero() || self.dns_tcp.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "dns_tcp_idle_timeout and dns_tcp_max_connections must be above zero".into(),
            ));
        }
        let p = &self.proxy;
        if !(0.0..=1.0).contains(&p.panic_threshold) || !(0.0..=1.0).contains(&p.retry_budget) {
            return Err(ConfigError::Invalid(
                "panic_threshold and retry_budget must be from 0 to 1".into(),
            ));
        }
        if p.outlier.failures == 0
            || p.connect_timeout.is_zero()
            || p.request_timeout.is_zero()
            || p.idle_timeout.is_zero()
            || p.client_header_timeout.is_zero()
            || p.max_client_connections == 0
        {
            return Err(ConfigError::Invalid(
                "outlier_failures, max_client_connections and the proxy timeouts must be above zero"
                    .into(),
            ));
        }
        Ok(())
    }

    /// For tests: every listener on `127.0.0.1:0`, the given control plane and data directory.
    pub fn for_test(control: &str, data_dir: Option<PathBuf>) -> Config {
        let mut config = Self::from_layers(Settings::default(), Settings::default())
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"));
        config.control = vec![control.to_owned()];
        config.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.dns_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir;
        config.shutdown_grace = Duration::from_secs(2);
        config
    }
}

/// The most worker threads the sidecar runs.
pub const MAX_WORKERS: usize = 1024;

fn parse_domain(text: &str) -> Result<Name, ConfigError> {
    let mut name = Name::from_ascii(text.to_ascii_lowercase())
        .map_err(|e| ConfigError::Invalid(format!("domain {text:?} is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err(ConfigError::Invalid("the domain cannot be the root".into()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], file: &str) -> Result<Config, ConfigError> {
        let cli: Cli = waypost_runtime::config::parse_args(
            std::iter::once("waypost-sidecar").chain(args.iter().copied()),
        )?;
        let file: Settings = waypost_runtime::config::parse_toml(file)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Config::from_layers(cli.settings, file)
    }

    #[test]
    fn workers_are_bounded() {
        assert_eq!(load(&["--workers", "1"], "").unwrap().workers, 1);
        assert_eq!(load(&[], "workers = 3").unwrap().workers, 3);
        assert!(
            load(&[], "").unwrap().workers >= 1,
            "the default is the usable CPUs"
        );
        for bad in ["0", "1025"] {
            let err = load(&["--workers", bad], "").unwrap_err().to_string();
            assert!(err.contains("workers must be from 1 to 1024"), "{err}");
        }
    }

    #[test]
    fn defaults() {
        let c = load(&[], "").unwrap();
        assert_eq!(c.control, vec!["http://127.0.0.1:9000"]);
        assert_eq!(c.dns_listen, "127.0.0.1:8600".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.domain.to_ascii(), "waypost.");
        assert_eq!(c.dns_ttl, Duration::from_secs(5));
        assert!(c.upstreams.is_empty());
        assert_eq!(c.dns_tcp.idle_timeout, Duration::from_secs(10));
        assert_eq!(c.dns_tcp.max_connections, 512);
        let c = load(
            &["--dns-tcp-max-connections", "8"],
            "dns_tcp_idle_timeout = \"2s\"",
        )
        .unwrap();
        assert_eq!(c.dns_tcp.max_connections, 8);
        assert_eq!(c.dns_tcp.idle_timeout, Duration::from_secs(2));
    }

    #[test]
    fn flags_override_the_file() {
        let file = "domain = \"Corp.Internal\"\ndns_ttl = \"30s\"\nupstreams = [\"127.0.0.53:53\"]\n\
                    [[tcp]]\nlisten = \"127.0.0.1:7001\"\nservice = \"db\"\n";
        let c = load(
            &["--dns-ttl", "1s", "--control", "http://a:1,http://b:2"],
            file,
        )
        .unwrap();
        assert_eq!(c.domain.to_ascii(), "corp.internal.");
        assert_eq!(c.dns_ttl, Duration::from_secs(1));
        assert_eq!(c.upstreams, vec!["127.0.0.53:53".parse().unwrap()]);
        assert_eq!(c.control, vec!["http://a:1", "http://b:2"]);
        assert_eq!(c.tcp, vec!["127.0.0.1:7001=db".parse().unwrap()]);
        let c = load(&["--tcp", "127.0.0.1:7002=a,127.0.0.1:7003=b"], "").unwrap();
        assert_eq!(c.tcp.len(), 2);
    }

    /// A flag's `[default: ...]` is the value applied without it, and the README's sidecar
    /// table gives the same default.
    #[test]
    fn each_documented_default_is_applied_and_in_the_readme() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let section = readme
            .split("Sidecar configuration")
            .nth(1)
            .expect("README.md has a sidecar configuration table");
        let checked =
            waypost_runtime::config::check_documented_defaults(&Cli::command(), section, |args| {
                load(args, "")
            })
            .unwrap();
        assert!(checked > 25, "{checked}");
    }

    #[test]
    fn the_readme_documents_every_setting() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let section = readme
            .split("Sidecar configuration")
            .nth(1)
            .expect("README.md has a sidecar configuration table");
        for arg in Cli::command().get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            if long == "config" {
                continue;
            }
            let row = format!(
                "| `{}` / `--{long}` | `{}` |",
                long.replace('-', "_"),
                env.to_string_lossy()
            );
            assert!(
                section.contains(&row),
                "README.md lacks the sidecar row {row}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(load(&["--domain", "."], "").is_err());
        assert!(load(&["--dns-ttl", "1500ms"], "").is_err());
        assert!(load(&[], "unknown = 1").is_err());
        assert!(load(&["--dns-tcp-idle-timeout", "0s"], "").is_err());
        assert!(load(&[], "dns_tcp_max_connections = 0").is_err());
    }
}
