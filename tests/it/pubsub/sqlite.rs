//! The embedded broker pubsub.sqlite through the sidecar (issue 11 C.9).
