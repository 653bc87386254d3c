//! Any bytes as a DNS query: decoded as the sidecar's server would, each question's name read
//! against the served domain (service, tag, SRV and address names), never a panic.
#![no_main]

use hickory_proto::{op::Message, rr::Name};
use libfuzzer_sys::fuzz_target;
use waypost_dns_names as names;

fuzz_target!(|data: &[u8]| {
    let domain = Name::from_ascii("waypost.").expect("a valid domain");
    if let Ok(message) = Message::from_vec(data) {
        for query in &message.queries {
            let _ = names::parse(&query.name().to_lowercase(), &domain);
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(name) = Name::from_ascii(text)
    {
        let _ = names::parse(&name.to_lowercase(), &domain);
    }
});
