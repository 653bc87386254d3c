//! Any text as a service name, instance id, tag or address: accepted or refused, never a panic,
//! and whatever is accepted reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypost_model::{Endpoint, InstanceId, ServiceName, name::check_tag};

fuzz_target!(|text: &str| {
    if let Ok(name) = ServiceName::new(text) {
        assert_eq!(name.as_str(), text);
    }
    if let Ok(id) = InstanceId::new(text) {
        assert_eq!(id.as_str(), text);
    }
    let _ = check_tag(text);
    if let Ok(endpoint) = Endpoint::parse_address(text) {
        // A parsed endpoint's `host:port` parses again to the same endpoint.
        let again = Endpoint::parse_host_port(&endpoint.host_port());
        assert_eq!(again.ok().as_ref(), Some(&endpoint), "{text:?}");
    }
});
