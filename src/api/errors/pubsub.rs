//! Wire mapping of `PubSubApiError`, as daprd v1.18 answers each case (`pkg/api/errors/pubsub.go`:
//! HTTP status, `errorCode`, gRPC code, ErrorInfo reason and metadata, ResourceInfo whose
//! description repeats the message).

use std::collections::BTreeMap;

use http::StatusCode;
use tonic::Code;

use super::codes::*;
use super::{ApiError, Detail};
use crate::api::pubsub::PubSubApiError;
use crate::components::pubsub::Metadata;

fn md(m: Option<Metadata>) -> Option<BTreeMap<String, String>> {
    m.map(|m| m.into_iter().collect())
}

fn pairs(p: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// daprd's `PubSubMetadataError.build`: a ResourceInfo (unless skipped) then the ErrorInfo.
fn build(status: StatusCode, code: Code, error_code: &'static str, reason: &str, pubsub: Option<&str>, msg: String, info: Option<BTreeMap<String, String>>) -> ApiError {
    let mut e = ApiError::new(status, code, error_code, msg.clone());
    if let Some(name) = pubsub {
        e = e.with(Detail::ResourceInfo { resource_type: "pubsub".into(), resource_name: name.into(), description: msg });
    }
    e.with_info(reason, info)
}

/// Maps a publish error for either transport (daprd builds them alike).
pub fn pubsub_error(e: PubSubApiError) -> ApiError {
    let msg = e.to_string();
    match e {
        PubSubApiError::NotConfigured { .. } => {
            build(StatusCode::BAD_REQUEST, Code::FailedPrecondition, ERR_PUBSUB_NOT_CONFIGURED, "DAPR_PUBSUB_NOT_CONFIGURED", None, msg, None)
        }
        PubSubApiError::NameEmpty { metadata } => {
            build(StatusCode::NOT_FOUND, Code::InvalidArgument, ERR_PUBSUB_EMPTY, "DAPR_PUBSUB_NAME_EMPTY", Some(""), msg, md(metadata))
        }
        PubSubApiError::NotFound { metadata, .. } => {
            build(StatusCode::NOT_FOUND, Code::InvalidArgument, ERR_PUBSUB_NOT_FOUND, "DAPR_PUBSUB_NOT_FOUND", None, msg, md(metadata))
        }
        PubSubApiError::TopicEmpty { pubsub, metadata } => {
            build(StatusCode::NOT_FOUND, Code::InvalidArgument, ERR_TOPIC_NAME_EMPTY, "DAPR_PUBSUB_TOPIC_NAME_EMPTY", Some(&pubsub), msg, md(metadata))
        }
        PubSubApiError::Metadata { pubsub, metadata, .. } => build(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            ERR_PUBSUB_REQUEST_METADATA,
            "DAPR_PUBSUB_METADATA_DESERIALIZATION",
            Some(&pubsub),
            msg,
            md(Some(metadata)),
        ),
        PubSubApiError::CloudEvent { pubsub, app_id, detail } => build(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument,
            ERR_PUBSUB_CLOUD_EVENTS_SER,
            "DAPR_PUBSUB_CLOUD_EVENT_CREATION",
            Some(&pubsub),
            msg,
            pairs(&[("appID", &app_id), ("error", &detail)]),
        ),
        PubSubApiError::MarshalEnvelope { pubsub, app_id, detail, .. } => build(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            ERR_PUBSUB_EVENTS_SER,
            "DAPR_PUBSUB_MARSHAL_ENVELOPE",
            Some(&pubsub),
            msg,
            pairs(&[("appID", &app_id), ("error", &detail)]),
        ),
        PubSubApiError::MarshalEvents { pubsub, app_id, detail, .. } => build(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            ERR_PUBSUB_EVENTS_SER,
            "DAPR_PUBSUB_MARSHAL_EVENTS",
            Some(&pubsub),
            msg,
            pairs(&[("appID", &app_id), ("error", &detail)]),
        ),
        PubSubApiError::UnmarshalEvents { pubsub, app_id, .. } => build(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            ERR_PUBSUB_EVENTS_SER,
            "DAPR_PUBSUB_UNMARSHAL_EVENTS",
            Some(&pubsub),
            msg,
            pairs(&[("appID", &app_id)]),
        ),
        PubSubApiError::Forbidden { pubsub, topic, .. } => {
            let error = msg.clone();
            build(StatusCode::FORBIDDEN, Code::PermissionDenied, ERR_PUBSUB_FORBIDDEN, "DAPR_PUBSUB_FORBIDDEN", Some(&pubsub), msg, pairs(&[("topic", &topic), ("error", &error)]))
        }
        PubSubApiError::Publish { pubsub, topic, detail } | PubSubApiError::BulkPartial { pubsub, topic, detail, .. } => build(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            ERR_PUBSUB_PUBLISH_MESSAGE,
            "DAPR_PUBSUB_PUBLISH_MESSAGE",
            Some(&pubsub),
            msg,
            pairs(&[("topic", &topic), ("error", &detail)]),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(e: &ApiError) -> (String, Option<BTreeMap<String, String>>) {
        e.details
            .iter()
            .find_map(|d| match d {
                Detail::ErrorInfo { reason, metadata } => Some((reason.clone(), metadata.clone())),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn codes_statuses_and_reasons_as_daprd() {
        let m = Metadata::from([("k".to_string(), "v".to_string())]);
        let cases = [
            (PubSubApiError::NotConfigured { pubsub: "p".into() }, 400, Code::FailedPrecondition, ERR_PUBSUB_NOT_CONFIGURED, "DAPR_PUBSUB_NOT_CONFIGURED"),
            (PubSubApiError::NameEmpty { metadata: None }, 404, Code::InvalidArgument, ERR_PUBSUB_EMPTY, "DAPR_PUBSUB_NAME_EMPTY"),
            (PubSubApiError::NotFound { pubsub: "p".into(), metadata: Some(m.clone()) }, 404, Code::InvalidArgument, ERR_PUBSUB_NOT_FOUND, "DAPR_PUBSUB_NOT_FOUND"),
            (PubSubApiError::TopicEmpty { pubsub: "p".into(), metadata: None }, 404, Code::InvalidArgument, ERR_TOPIC_NAME_EMPTY, "DAPR_PUBSUB_TOPIC_NAME_EMPTY"),
            (PubSubApiError::Metadata { pubsub: "p".into(), detail: "d".into(), metadata: m.clone() }, 400, Code::InvalidArgument, ERR_PUBSUB_REQUEST_METADATA, "DAPR_PUBSUB_METADATA_DESERIALIZATION"),
            (PubSubApiError::CloudEvent { pubsub: "p".into(), app_id: "a".into(), detail: "d".into() }, 500, Code::InvalidArgument, ERR_PUBSUB_CLOUD_EVENTS_SER, "DAPR_PUBSUB_CLOUD_EVENT_CREATION"),
            (PubSubApiError::Forbidden { pubsub: "p".into(), topic: "t".into(), app_id: "a".into() }, 403, Code::PermissionDenied, ERR_PUBSUB_FORBIDDEN, "DAPR_PUBSUB_FORBIDDEN"),
            (PubSubApiError::Publish { pubsub: "p".into(), topic: "t".into(), detail: "d".into() }, 500, Code::Internal, ERR_PUBSUB_PUBLISH_MESSAGE, "DAPR_PUBSUB_PUBLISH_MESSAGE"),
            (PubSubApiError::MarshalEvents { pubsub: "p".into(), topic: "t".into(), app_id: "a".into(), detail: "d".into() }, 400, Code::InvalidArgument, ERR_PUBSUB_EVENTS_SER, "DAPR_PUBSUB_MARSHAL_EVENTS"),
        ];
        for (e, status, code, error_code, reason) in cases {
            let w = pubsub_error(e.clone());
            assert_eq!((w.status.as_u16(), w.code, w.error_code, info(&w).0.as_str()), (status, code, error_code, reason), "{e:?}");
        }
        let w = pubsub_error(PubSubApiError::Forbidden { pubsub: "p".into(), topic: "t".into(), app_id: "a".into() });
        assert_eq!(w.message, "topic t is not allowed for app id a");
        assert_eq!(info(&w).1.unwrap()["error"], w.message);
        assert!(matches!(&w.details[0], Detail::ResourceInfo { resource_name, description, .. } if resource_name == "p" && description == &w.message));
        let nf = pubsub_error(PubSubApiError::NotFound { pubsub: "p".into(), metadata: None });
        assert_eq!(nf.details.len(), 1, "not-found skips the ResourceInfo");
        assert_eq!(nf.message, "pubsub p is not found");
    }
}
