//! `waypost-sidecar`, the per-host data plane (DNS responder, HTTP and TCP proxies).
//! Not built yet: see issues 4 and 5. The crate exists so the workspace has its final shape.
