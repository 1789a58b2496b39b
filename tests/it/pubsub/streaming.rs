//! Streaming subscriptions over gRPC SubscribeTopicEventsAlpha1 (issue 11 B.4).
