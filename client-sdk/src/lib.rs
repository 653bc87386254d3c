//! `waypost-client`, the Rust SDK for the control plane. Not built yet: see issue 3. Until then,
//! the wire types in `waypost-model` and any HTTP client (or one generated from
//! `openapi/openapi.json`) talk to the control plane.
