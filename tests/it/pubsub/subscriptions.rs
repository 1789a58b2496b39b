//! Subscriptions: programmatic, declarative v1alpha1/v2alpha1, CEL routing, metadata listing (issue 11 B.4).
