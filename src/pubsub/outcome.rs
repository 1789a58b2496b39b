//! The decision core of delivery, pure so every path is tested exhaustively: how an app's
//! answer reads (daprd's postman rules, HTTP and gRPC and bulk), and what then happens to the
//! broker message (rapr's guarantee, docs/runtime-semantics.md, pub/sub).
//!
//! daprd acknowledges a message in several places even when the dead-letter publish failed
//! (expired and unrouted events, bulk DROP). Here every path ends in a [`Step`], and the only
//! steps that acknowledge are [`Step::Ack`] and a dead-letter publish that succeeded
//! ([`after_dead_letter`]). A message over the poison limit goes to the dead-letter topic, or is
//! parked: kept by the broker, never acknowledged silently.

use crate::components::pubsub::Outcome;

/// What the app said about one event, as daprd reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAnswer {
    /// 2xx with `SUCCESS`, an empty status, an empty or unparseable body; gRPC `SUCCESS`.
    Success,
    /// `RETRY`, an unknown status, a non-2xx other than 404, a call that failed; in bulk, an
    /// entry the app did not answer.
    Retry,
    /// `DROP`: the app refuses the event; it goes to the dead-letter topic if one is set.
    Drop,
    /// HTTP 404: the route is missing on the app; dropped as `DROP` and logged as an error.
    NotFound,
    /// gRPC `Unimplemented`: daprd acknowledges it (no dead letter).
    Unimplemented,
}

/// The app's JSON answer body (`{"status": "..."}`).
#[derive(serde::Deserialize)]
struct AppResponse {
    #[serde(default)]
    status: Option<String>,
}

impl AppAnswer {
    /// An HTTP app's answer: its status code and body.
    pub fn from_http(status: u16, body: &[u8]) -> Self {
        match status {
            200..=299 => match serde_json::from_slice::<AppResponse>(body) {
                // Empty or unparseable: daprd skips the status check and counts a success.
                Err(_) => AppAnswer::Success,
                Ok(r) => Self::from_status_text(r.status.as_deref().unwrap_or("")),
            },
            404 => AppAnswer::NotFound,
            _ => AppAnswer::Retry,
        }
    }

    /// A status string of a single event's answer: empty is a success, as daprd (case matters:
    /// daprd compares the exact upper-case names).
    fn from_status_text(s: &str) -> Self {
        match s {
            "" | "SUCCESS" => AppAnswer::Success,
            "DROP" => AppAnswer::Drop,
            _ => AppAnswer::Retry,
        }
    }

    /// One entry's status in a bulk answer; a missing or empty status is `RETRY` in bulk.
    pub fn from_bulk_status(s: Option<&str>) -> Self {
        match s {
            None | Some("") => AppAnswer::Retry,
            Some(s) => Self::from_status_text(s),
        }
    }

    /// A gRPC app's `TopicEventResponse.status` (0 SUCCESS, 1 RETRY, 2 DROP; others retry).
    pub fn from_grpc_status(status: i32) -> Self {
        match status {
            0 => AppAnswer::Success,
            2 => AppAnswer::Drop,
            _ => AppAnswer::Retry,
        }
    }

    /// A gRPC call that ended in an error status.
    pub fn from_grpc_error(code: tonic::Code) -> Self {
        if code == tonic::Code::Unimplemented {
            AppAnswer::Unimplemented
        } else {
            AppAnswer::Retry
        }
    }

    /// Whether the inbound resiliency policy tries the app again.
    pub fn is_retriable(self) -> bool {
        self == AppAnswer::Retry
    }

    /// daprd's `process_status` and `status` labels of `dapr_component_pubsub_ingress_*`.
    pub fn metric_labels(self) -> (&'static str, &'static str) {
        match self {
            AppAnswer::Success => ("success", "success"),
            AppAnswer::Retry => ("retry", "retry"),
            AppAnswer::Drop => ("drop", "success"),
            AppAnswer::NotFound | AppAnswer::Unimplemented => ("drop", "drop"),
        }
    }
}

/// What is known of one message when deciding its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The subscription has a dead-letter topic.
    pub dead_letter: bool,
    /// The broker's delivery count, this delivery included (0: the broker does not count).
    pub delivery_count: u32,
    /// The poison limit (`None`: the broker cannot redeliver, so there is none).
    pub max_delivery_count: Option<u32>,
}

impl Limits {
    /// This delivery is the last one the poison limit allows (or past it).
    fn at_limit(&self) -> bool {
        matches!(self.max_delivery_count, Some(max) if max > 0 && self.delivery_count >= max)
    }

    /// Past the limit: the message was already delivered as often as allowed.
    fn over_limit(&self) -> bool {
        matches!(self.max_delivery_count, Some(max) if max > 0 && self.delivery_count > max)
    }
}

/// What to do next with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Hand it to the app.
    Deliver,
    /// Acknowledge it.
    Ack,
    /// Publish it to the dead-letter topic, then acknowledge only if that worked.
    DeadLetter,
    /// Leave it unacknowledged for redelivery.
    Retry,
    /// Keep it, stop redelivering it (over the poison limit, no dead-letter topic).
    Park,
}

/// Over the poison limit: the dead-letter topic, else parked.
fn poison(l: &Limits) -> Step {
    if l.dead_letter {
        Step::DeadLetter
    } else {
        Step::Park
    }
}

/// Before delivering: a message already delivered as often as the poison limit allows is not
/// delivered again.
pub fn admit(l: &Limits) -> Step {
    if l.over_limit() {
        poison(l)
    } else {
        Step::Deliver
    }
}

/// A message the runtime drops without the app (expired, no route matched): daprd acknowledges
/// and tries the dead-letter topic; rapr acknowledges only after a dead-letter publish worked.
pub fn dropped(l: &Limits) -> Step {
    if l.dead_letter {
        Step::DeadLetter
    } else {
        Step::Ack
    }
}

/// A message that could not be handed over at all (not a CloudEvent, bad metadata, a routing
/// expression that failed): as an app's `RETRY`.
pub fn undeliverable(l: &Limits) -> Step {
    settle(AppAnswer::Retry, l)
}

/// After the inbound policy is done with the app: its last answer decides.
pub fn settle(answer: AppAnswer, l: &Limits) -> Step {
    match answer {
        AppAnswer::Success | AppAnswer::Unimplemented => Step::Ack,
        AppAnswer::Drop | AppAnswer::NotFound => dropped(l),
        AppAnswer::Retry if l.at_limit() => poison(l),
        // Retries exhausted: daprd's dead-letter topic, else the broker redelivers.
        AppAnswer::Retry if l.dead_letter => Step::DeadLetter,
        AppAnswer::Retry => Step::Retry,
    }
}

/// The broker outcome of a step (a dead-letter step is resolved by [`after_dead_letter`]).
pub fn outcome(step: Step) -> Outcome {
    match step {
        Step::Ack => Outcome::Ack,
        Step::Park => Outcome::Park,
        Step::Deliver | Step::DeadLetter | Step::Retry => Outcome::Retry,
    }
}

/// After a dead-letter publish: acknowledged only if it worked; otherwise the message stays.
pub fn after_dead_letter(published: bool) -> Outcome {
    if published {
        Outcome::Ack
    } else {
        Outcome::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AppAnswer::*;

    fn lim(dead_letter: bool, count: u32, max: Option<u32>) -> Limits {
        Limits { dead_letter, delivery_count: count, max_delivery_count: max }
    }

    #[test]
    fn http_answers_read_as_daprd() {
        assert_eq!(AppAnswer::from_http(200, br#"{"status":"SUCCESS"}"#), Success);
        assert_eq!(AppAnswer::from_http(204, b""), Success);
        assert_eq!(AppAnswer::from_http(200, b"not json"), Success);
        assert_eq!(AppAnswer::from_http(200, br#"{"status":""}"#), Success);
        assert_eq!(AppAnswer::from_http(200, br#"{"other":1}"#), Success);
        assert_eq!(AppAnswer::from_http(201, br#"{"status":"RETRY"}"#), Retry);
        assert_eq!(AppAnswer::from_http(200, br#"{"status":"DROP"}"#), Drop);
        assert_eq!(AppAnswer::from_http(200, br#"{"status":"drop"}"#), Retry, "daprd compares exact names");
        assert_eq!(AppAnswer::from_http(200, br#"{"status":"MAYBE"}"#), Retry);
        assert_eq!(AppAnswer::from_http(404, br#"{"status":"SUCCESS"}"#), NotFound);
        for code in [300, 400, 401, 500, 503] {
            assert_eq!(AppAnswer::from_http(code, b""), Retry, "{code}");
        }
    }

    #[test]
    fn grpc_and_bulk_answers_read_as_daprd() {
        assert_eq!(AppAnswer::from_grpc_status(0), Success);
        assert_eq!(AppAnswer::from_grpc_status(1), Retry);
        assert_eq!(AppAnswer::from_grpc_status(2), Drop);
        assert_eq!(AppAnswer::from_grpc_status(7), Retry);
        assert_eq!(AppAnswer::from_grpc_error(tonic::Code::Unimplemented), Unimplemented);
        assert_eq!(AppAnswer::from_grpc_error(tonic::Code::NotFound), Retry);
        assert_eq!(AppAnswer::from_grpc_error(tonic::Code::Unavailable), Retry);
        assert_eq!(AppAnswer::from_bulk_status(None), Retry);
        assert_eq!(AppAnswer::from_bulk_status(Some("")), Retry);
        assert_eq!(AppAnswer::from_bulk_status(Some("SUCCESS")), Success);
        assert_eq!(AppAnswer::from_bulk_status(Some("DROP")), Drop);
        assert_eq!(AppAnswer::from_bulk_status(Some("x")), Retry);
    }

    #[test]
    fn only_retry_is_retried_by_the_policy() {
        assert!(Retry.is_retriable());
        for a in [Success, Drop, NotFound, Unimplemented] {
            assert!(!a.is_retriable(), "{a:?}");
        }
    }

    #[test]
    fn metric_labels_are_daprds() {
        assert_eq!(Success.metric_labels(), ("success", "success"));
        assert_eq!(Retry.metric_labels(), ("retry", "retry"));
        assert_eq!(Drop.metric_labels(), ("drop", "success"));
        assert_eq!(NotFound.metric_labels(), ("drop", "drop"));
        assert_eq!(Unimplemented.metric_labels(), ("drop", "drop"));
    }

    #[test]
    fn every_answer_with_and_without_a_dead_letter_topic_below_the_limit() {
        let cases = [
            (Success, false, Step::Ack),
            (Success, true, Step::Ack),
            (Unimplemented, true, Step::Ack),
            (Drop, false, Step::Ack),
            (Drop, true, Step::DeadLetter),
            (NotFound, false, Step::Ack),
            (NotFound, true, Step::DeadLetter),
            (Retry, false, Step::Retry),
            (Retry, true, Step::DeadLetter),
        ];
        for (answer, dl, want) in cases {
            assert_eq!(settle(answer, &lim(dl, 1, Some(10))), want, "{answer:?} dl={dl}");
            // A broker that does not count never hits the limit.
            assert_eq!(settle(answer, &lim(dl, 0, Some(10))), want, "{answer:?} dl={dl} uncounted");
            assert_eq!(settle(answer, &lim(dl, 500, None)), want, "{answer:?} dl={dl} no limit");
        }
    }

    #[test]
    fn a_failure_at_the_poison_limit_parks_or_dead_letters_never_acks() {
        assert_eq!(settle(Retry, &lim(false, 10, Some(10))), Step::Park);
        assert_eq!(settle(Retry, &lim(true, 10, Some(10))), Step::DeadLetter);
        assert_eq!(settle(Retry, &lim(false, 9, Some(10))), Step::Retry);
        assert_eq!(undeliverable(&lim(false, 10, Some(10))), Step::Park);
        assert_eq!(undeliverable(&lim(false, 3, Some(10))), Step::Retry);
        assert_eq!(undeliverable(&lim(true, 3, Some(10))), Step::DeadLetter);
        // A success at the limit is still a success.
        assert_eq!(settle(Success, &lim(false, 10, Some(10))), Step::Ack);
        // A limit of 0 means none.
        assert_eq!(settle(Retry, &lim(false, 99, Some(0))), Step::Retry);
    }

    #[test]
    fn a_message_past_the_limit_is_not_delivered_again() {
        assert_eq!(admit(&lim(false, 10, Some(10))), Step::Deliver);
        assert_eq!(admit(&lim(false, 11, Some(10))), Step::Park);
        assert_eq!(admit(&lim(true, 11, Some(10))), Step::DeadLetter);
        assert_eq!(admit(&lim(false, 11, None)), Step::Deliver);
    }

    #[test]
    fn runtime_drops_ack_only_through_a_working_dead_letter_publish() {
        assert_eq!(dropped(&lim(false, 1, Some(10))), Step::Ack);
        assert_eq!(dropped(&lim(true, 1, Some(10))), Step::DeadLetter);
        assert_eq!(after_dead_letter(true), Outcome::Ack);
        assert_eq!(after_dead_letter(false), Outcome::Retry);
    }

    #[test]
    fn steps_map_to_broker_outcomes() {
        assert_eq!(outcome(Step::Ack), Outcome::Ack);
        assert_eq!(outcome(Step::Park), Outcome::Park);
        assert_eq!(outcome(Step::Retry), Outcome::Retry);
        // Unresolved steps never acknowledge.
        assert_eq!(outcome(Step::DeadLetter), Outcome::Retry);
        assert_eq!(outcome(Step::Deliver), Outcome::Retry);
    }
}
