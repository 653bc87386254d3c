//! Any bytes as the JSON body of every write: parsing and validation answer, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypost_model::{CheckReport, DrainRequest, HeartbeatRequest, InstanceRef, RegisterRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<RegisterRequest>(data) {
        let _ = req.validate(30);
    }
    if let Ok(req) = serde_json::from_slice::<HeartbeatRequest>(data) {
        let _ = req.form();
    }
    if let Ok(r) = serde_json::from_slice::<InstanceRef>(data) {
        let _ = r.resolve();
    }
    let _ = serde_json::from_slice::<DrainRequest>(data);
    let _ = serde_json::from_slice::<CheckReport>(data);
});
