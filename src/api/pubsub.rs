//! `PubSubApi`: the transport-free publish facade shared by the HTTP and gRPC adapters (daprd's
//! `onPublish`/`onBulkPublish` and `PublishEvent`/`BulkPublishEvent`, with its publisher).
//!
//! Checks the request in daprd's order (component name, component, topic, `rawPayload`), wraps
//! the data in the CloudEvents envelope (`pubsub::cloudevents`) unless `rawPayload=true`, checks
//! the component's topic scopes, and hands the bytes to the broker through its `PubSubClient`
//! taken from the directory snapshot, under the component's outbound resiliency policy, each call
//! one sample of daprd's `dapr_component_pubsub_egress_*` metrics. A bulk
//! publish retries only the entries that failed, as daprd's bulk resiliency does. Errors are
//! `PubSubApiError`; `api/errors/pubsub.rs` maps them to the wire.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::components::directory::DirectoryHandle;
use crate::components::pubsub::{BulkEntry, BulkFailure, BulkPublishRequest, Feature, Metadata, PubSubClient, PubSubError, PublishRequest};
use crate::pubsub::cloudevents::{self, CloudEventError, Publish};
use crate::resiliency::{AttemptError, ComponentKind, PolicyError, Resiliency};

/// Failures of the publish API, before they are mapped to the wire. `metadata` fields are the
/// request metadata daprd puts in the ErrorInfo.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PubSubApiError {
    /// daprd's "no pub/sub adapter"; daprd always has one, so rapr never answers it either
    /// (kept for the mapping).
    #[error("pubsub {pubsub} is not configured")]
    NotConfigured { pubsub: String },
    /// The request names no component.
    #[error("pubsub name is empty")]
    NameEmpty { metadata: Option<Metadata> },
    /// No ready component by that name (none at all included, as daprd).
    #[error("pubsub {pubsub} is not found")]
    NotFound { pubsub: String, metadata: Option<Metadata> },
    /// The request names no topic.
    #[error("topic is empty in pubsub {pubsub}")]
    TopicEmpty { pubsub: String, metadata: Option<Metadata> },
    /// `rawPayload` is not a boolean.
    #[error("failed deserializing metadata. Error: {detail}")]
    Metadata { pubsub: String, detail: String, metadata: Metadata },
    /// The envelope could not be built (an `application/cloudevents+json` body that is not a
    /// JSON object).
    #[error("cannot create cloudevent")]
    CloudEvent { pubsub: String, app_id: String, detail: String },
    /// A bulk entry's event does not fit its content type (HTTP).
    #[error("error when marshalling cloud event envelope for topic {topic} pubsub {pubsub}: {detail}")]
    MarshalEnvelope { pubsub: String, topic: String, app_id: String, detail: String },
    /// A bulk entry id is missing or repeated.
    #[error("error marshaling events to bytes for topic {topic} pubsub {pubsub}. error: {detail}")]
    MarshalEvents { pubsub: String, topic: String, app_id: String, detail: String },
    /// A bulk body is not a list of entries (HTTP).
    #[error("error when unmarshaling the request for topic {topic} pubsub {pubsub}: {detail}")]
    UnmarshalEvents { pubsub: String, topic: String, app_id: String, detail: String },
    /// The component's scopes do not let this app publish to the topic.
    #[error("topic {topic} is not allowed for app id {app_id}")]
    Forbidden { pubsub: String, topic: String, app_id: String },
    /// The broker failed the publish (after the policy's retries).
    #[error("error when publishing to topic {topic} in pubsub {pubsub}: {detail}")]
    Publish { pubsub: String, topic: String, detail: String },
    /// Some entries of a bulk publish failed; `failed` lists them (HTTP answers them).
    #[error("error when publishing to topic {topic} in pubsub {pubsub}: {detail}")]
    BulkPartial { pubsub: String, topic: String, detail: String, failed: Vec<BulkFailure> },
}

/// One publish as an adapter received it.
#[derive(Debug, Clone, Default)]
pub struct PublishArgs {
    /// Component name.
    pub pubsub: String,
    /// Topic (may contain `/`).
    pub topic: String,
    /// Body.
    pub data: Bytes,
    /// The body's content type (empty: `text/plain`).
    pub content_type: String,
    /// `metadata.*` query parameters or the gRPC map.
    pub metadata: Metadata,
    /// The request span's `traceparent` (empty when none).
    pub trace_parent: String,
    /// Its `tracestate`.
    pub trace_state: String,
}

/// One entry of a bulk publish, its event already as bytes.
#[derive(Debug, Clone, Default)]
pub struct BulkEntryArgs {
    /// Caller's id (required, unique in the request).
    pub entry_id: String,
    /// The event bytes.
    pub event: Bytes,
    /// Their content type.
    pub content_type: String,
    /// The entry's own metadata; when present the request's is merged under it, when absent the
    /// entry has none (daprd's `PopulateMetadataForBulkPublishEntry`).
    pub metadata: Option<Metadata>,
}

/// A bulk publish as an adapter received it.
#[derive(Debug, Clone, Default)]
pub struct BulkArgs {
    /// Component name.
    pub pubsub: String,
    /// Topic.
    pub topic: String,
    /// Entries in order.
    pub entries: Vec<BulkEntryArgs>,
    /// Request metadata.
    pub metadata: Metadata,
    /// The request span's `traceparent`.
    pub trace_parent: String,
    /// Its `tracestate`.
    pub trace_state: String,
    /// The name of each entry's producer span: the HTTP request's path, or daprd's
    /// `/dapr.proto.runtime.v1.Dapr/BulkPublishEvent[Alpha1]/` over gRPC.
    pub span_name: String,
}

/// The publish facade.
#[derive(Clone)]
pub struct PubSubApi {
    directory: DirectoryHandle,
    resiliency: Resiliency,
    app_id: Arc<str>,
    tracer: Option<crate::runtime::telemetry::Tracing>,
}

impl PubSubApi {
    /// Builds the facade; `app_id` is the events' `source` and the scopes' subject.
    pub fn new(directory: DirectoryHandle, resiliency: Resiliency, app_id: &str) -> Self {
        Self { directory, resiliency, app_id: Arc::from(app_id), tracer: None }
    }

    /// Bulk publishes start a producer span per entry with this tracer, as daprd.
    pub fn with_tracer(mut self, tracer: crate::runtime::telemetry::Tracing) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// daprd's `validateAndGetPubsubAndTopic`: name, component, topic. `metadata` is what the
    /// adapter's errors carry (HTTP: the request's; gRPC: none for not-found).
    pub fn component(&self, pubsub: &str, topic: &str, metadata: &Metadata, grpc: bool) -> Result<PubSubClient, PubSubApiError> {
        if pubsub.is_empty() {
            return Err(PubSubApiError::NameEmpty { metadata: Some(metadata.clone()) });
        }
        let Some(client) = self.directory.load().pubsubs.get(pubsub).cloned() else {
            return Err(PubSubApiError::NotFound { pubsub: pubsub.into(), metadata: (!grpc).then(|| metadata.clone()) });
        };
        if topic.is_empty() {
            return Err(PubSubApiError::TopicEmpty { pubsub: pubsub.into(), metadata: Some(metadata.clone()) });
        }
        Ok(client)
    }

    /// `rawPayload` of a request.
    pub fn raw_payload(pubsub: &str, metadata: &Metadata) -> Result<bool, PubSubApiError> {
        cloudevents::raw_payload(metadata).map_err(|e| PubSubApiError::Metadata { pubsub: pubsub.into(), detail: e.to_string(), metadata: metadata.clone() })
    }

    fn envelope(&self, client: &PubSubClient, pubsub: &str, topic: &str, e: EnvelopeIn<'_>) -> Result<Bytes, PubSubApiError> {
        let p = Publish {
            app_id: &self.app_id,
            pubsub,
            topic,
            data: e.data,
            content_type: e.content_type,
            trace_parent: e.trace_parent,
            trace_state: e.trace_state,
            metadata: e.metadata,
            broker_has_ttl: client.has(Feature::MessageTtl),
        };
        cloudevents::build_bytes(&p, OffsetDateTime::now_utc()).map_err(|err| match err {
            CloudEventError::InvalidCloudEvent(detail) | CloudEventError::Malformed(detail) => {
                PubSubApiError::CloudEvent { pubsub: pubsub.into(), app_id: self.app_id.to_string(), detail }
            }
            other => PubSubApiError::CloudEvent { pubsub: pubsub.into(), app_id: self.app_id.to_string(), detail: other.to_string() },
        })
    }

    fn check_scopes(&self, client: &PubSubClient, pubsub: &str, topic: &str) -> Result<(), PubSubApiError> {
        if client.may_publish(&self.app_id, topic) {
            return Ok(());
        }
        Err(PubSubApiError::Forbidden { pubsub: pubsub.into(), topic: topic.into(), app_id: self.app_id.to_string() })
    }

    /// Publishes one event (the component already checked by the adapter, as daprd checks it
    /// before reading the body).
    pub async fn publish(&self, client: &PubSubClient, a: PublishArgs, grpc: bool) -> Result<(), PubSubApiError> {
        let raw = Self::raw_payload(&a.pubsub, &a.metadata)?;
        let mut metadata = a.metadata.clone();
        let data = if raw {
            // daprd's gRPC publish carries the trace context in the metadata of a raw payload.
            if grpc {
                metadata.insert(cloudevents::field::TRACE_ID.into(), a.trace_parent.clone());
                metadata.insert(cloudevents::field::TRACE_STATE.into(), a.trace_state.clone());
            }
            a.data.clone()
        } else {
            let e = EnvelopeIn { data: &a.data, content_type: &a.content_type, trace_parent: &a.trace_parent, trace_state: &a.trace_state, metadata: &a.metadata };
            self.envelope(client, &a.pubsub, &a.topic, e)?
        };
        self.check_scopes(client, &a.pubsub, &a.topic)?;
        let req = PublishRequest { topic: a.topic.clone(), data, content_type: None, metadata };
        let policy = self.resiliency.for_component_outbound(&a.pubsub, ComponentKind::PubSub);
        let client = &client.under_policy(policy.timeout());
        let started = std::time::Instant::now();
        let result = policy.run(|| retriable(client.publish(req.clone()))).await;
        self.record(&a.pubsub, &a.topic, false, result.is_ok(), started);
        result.map_err(|e| PubSubApiError::Publish { pubsub: a.pubsub.clone(), topic: a.topic.clone(), detail: gave_up(e) })
    }

    /// Publishes many events to one topic; `Err(BulkPartial)` lists the entries that failed.
    pub async fn bulk_publish(&self, client: &PubSubClient, a: BulkArgs) -> Result<(), PubSubApiError> {
        let raw = Self::raw_payload(&a.pubsub, &a.metadata)?;
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::with_capacity(a.entries.len());
        // One PRODUCER span per enveloped entry, ended with the call's outcome on every path.
        let mut spans = ProducerSpans(Vec::new());
        for e in a.entries {
            if e.entry_id.is_empty() || !seen.insert(e.entry_id.clone()) {
                return Err(PubSubApiError::MarshalEvents {
                    pubsub: a.pubsub.clone(),
                    topic: a.topic.clone(),
                    app_id: self.app_id.to_string(),
                    detail: "entryId is duplicated or not present for entry".into(),
                });
            }
            let metadata = e.metadata.map(|own| crate::components::pubsub::merged(&a.metadata, own)).unwrap_or_default();
            let data = if raw {
                e.event
            } else {
                let span = self.tracer.as_ref().filter(|_| !a.trace_parent.is_empty()).and_then(|t| t.producer_span(&a.span_name, &a.trace_parent));
                let trace_parent = span.as_ref().map_or(a.trace_parent.as_str(), |s| s.traceparent()).to_string();
                spans.0.extend(span);
                let env = EnvelopeIn { data: &e.event, content_type: &e.content_type, trace_parent: &trace_parent, trace_state: &a.trace_state, metadata: &metadata };
                self.envelope(client, &a.pubsub, &a.topic, env)?
            };
            entries.push(BulkEntry { entry_id: e.entry_id, data, content_type: e.content_type, metadata });
        }
        self.check_scopes(client, &a.pubsub, &a.topic)?;
        let policy = self.resiliency.for_component_outbound(&a.pubsub, ComponentKind::PubSub);
        let client = &client.under_policy(policy.timeout());
        // The entries still to publish: each attempt retries only the ones that failed before.
        let pending = ArcSwap::from_pointee(entries);
        let last_failed: ArcSwap<Vec<BulkFailure>> = ArcSwap::from_pointee(Vec::new());
        let started = std::time::Instant::now();
        let result = policy
            .run(|| {
                let (batch, pending, last_failed) = (pending.load_full(), &pending, &last_failed);
                let req = BulkPublishRequest { topic: a.topic.clone(), entries: batch.as_ref().clone(), metadata: a.metadata.clone() };
                async move {
                    match client.bulk_publish(req).await {
                        Ok(failed) if failed.is_empty() => Ok(()),
                        Ok(failed) => {
                            let ids: std::collections::HashSet<&str> = failed.iter().map(|f| f.entry_id.as_str()).collect();
                            pending.store(Arc::new(batch.iter().filter(|e| ids.contains(e.entry_id.as_str())).cloned().collect()));
                            let first = PubSubError::Failed(failed[0].error.clone());
                            last_failed.store(Arc::new(failed));
                            Err(AttemptError::Retriable(first))
                        }
                        Err(e) => {
                            last_failed.store(Arc::new(Vec::new()));
                            Err(AttemptError::Retriable(e))
                        }
                    }
                }
            })
            .await;
        self.record(&a.pubsub, &a.topic, true, result.is_ok(), started);
        let Err(e) = result else {
            spans.end(None);
            return Ok(());
        };
        spans.end(Some(&e.to_string()));
        let gave_up_whole = !matches!(e, PolicyError::Operation(_)) || last_failed.load().is_empty();
        let detail = gave_up(e);
        // As daprd: when the broker failed as a whole (or the policy timed out or its breaker is
        // open), every entry still pending is reported with that error.
        let failed = if gave_up_whole {
            pending.load().iter().map(|e| BulkFailure { entry_id: e.entry_id.clone(), error: detail.clone() }).collect()
        } else {
            last_failed.load().as_ref().clone()
        };
        Err(PubSubApiError::BulkPartial { pubsub: a.pubsub, topic: a.topic, detail, failed })
    }

    /// One publish (or bulk call) in daprd's `dapr_component_pubsub_egress_*` metrics, timed
    /// around the whole policy run as daprd does; refused requests are not counted.
    fn record(&self, pubsub: &str, topic: &str, bulk: bool, success: bool, started: std::time::Instant) {
        if let Some(m) = self.directory.load().metrics.clone() {
            m.pubsub_egress(pubsub, topic, bulk, success, started);
        }
    }
}

/// The producer spans of a bulk publish's entries. Ended with the outcome when the call is
/// done; ended as errors when dropped before (a refused entry or scope stops the call early).
struct ProducerSpans(Vec<crate::runtime::telemetry::CallbackSpan>);

impl ProducerSpans {
    fn end(&mut self, error: Option<&str>) {
        for s in self.0.drain(..) {
            s.end_producer(error);
        }
    }
}

impl Drop for ProducerSpans {
    fn drop(&mut self) {
        self.end(Some("bulk publish refused"));
    }
}

/// What the envelope of one event is built from.
struct EnvelopeIn<'a> {
    data: &'a [u8],
    content_type: &'a str,
    trace_parent: &'a str,
    trace_state: &'a str,
    metadata: &'a Metadata,
}

async fn retriable(call: impl std::future::Future<Output = Result<(), PubSubError>>) -> Result<(), AttemptError<PubSubError>> {
    call.await.map_err(|e| match e {
        PubSubError::Metadata(_) => AttemptError::Permanent(e),
        e => AttemptError::Retriable(e),
    })
}

fn gave_up(e: PolicyError<PubSubError>) -> String {
    match e {
        PolicyError::Operation(e) => e.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "pubsub_tests.rs"]
mod tests;
