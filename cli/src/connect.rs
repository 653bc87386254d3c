//! The options every command that talks to the control plane shares: where it is, the token,
//! TLS files, and the output format. The environment variables are the SDK's
//! (`ClientBuilder::env`) plus `WAYPOST_ADDR`.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use waypost_client::{Client, Error};

use crate::output::Format;

/// Connection and output options.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection and output")]
pub(crate) struct Common {
    /// Control-plane address: `host:port` (http) or a URL (`https://...`). Repeat it, or give
    /// several comma-separated, to fail over to the next when one does not answer.
    /// [default: the control plane's default listen address, 127.0.0.1:9000]
    #[arg(long, env = "WAYPOST_ADDR", value_delimiter = ',', value_name = "ADDR")]
    pub(crate) addr: Vec<String>,
    /// Bearer token, for a control plane with authorization on.
    #[arg(long, env = "WAYPOST_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// For https:// addresses: trust only the CA certificates in this PEM file.
    #[arg(long, env = "WAYPOST_CA_CERT", value_name = "PEM")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present, for a control plane that asks for one (mTLS).
    #[arg(
        long,
        env = "WAYPOST_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    pub(crate) client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "WAYPOST_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    pub(crate) client_key: Option<PathBuf>,
    /// The limit for one request to one address.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub(crate) timeout: Duration,
    /// Output format [default: table when stdout is a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    pub(crate) output: Option<Format>,
}

impl Common {
    /// The client these options describe. No request is made.
    pub(crate) fn client(&self) -> Result<Client, Error> {
        let mut builder = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(waypost_client::DEFAULT_CONNECT_TIMEOUT))
            .user_agent(concat!("waypost-cli/", env!("CARGO_PKG_VERSION")));
        let default = [waypost_control::config::defaults::LISTEN.to_string()];
        let addrs = self.addr.iter().map(|a| a.trim()).filter(|a| !a.is_empty());
        let addrs: Vec<&str> = addrs.collect();
        let addrs = if addrs.is_empty() {
            default.iter().map(String::as_str).collect()
        } else {
            addrs
        };
        for addr in addrs {
            builder = builder.endpoint(url(addr));
        }
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(ca) = &self.ca_cert {
            builder = builder.ca_cert(ca);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            builder = builder.client_cert(cert, key);
        }
        builder.build()
    }

    /// The output format: `-o`, or what suits stdout.
    pub(crate) fn format(&self) -> Format {
        crate::output::format(self.output)
    }
}

/// An address as a URL: `host:port` means `http://host:port`.
fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_http() {
        assert_eq!(url("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(url("https://cp:9000/x"), "https://cp:9000/x");
    }
}
