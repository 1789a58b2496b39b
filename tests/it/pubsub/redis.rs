//! pubsub.redis through the sidecar (issue 11 C.10).
