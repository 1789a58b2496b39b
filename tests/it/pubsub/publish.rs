//! Publishing over HTTP and gRPC: envelopes, bulk, errors, scopes (issue 11 A).
