//! Unit tests of the stream task: an in-process channel stands for the app's side of the stream.

use std::time::Duration;

use super::*;

/// The app's side: what it sends in, what it reads out, and the running task.
struct App {
    send: mpsc::UnboundedSender<Result<pb::SubscribeTopicEventsRequestAlpha1, Status>>,
    read: mpsc::Receiver<Outbound>,
    sink: AppStream,
    task: tokio::task::JoinHandle<StreamEnd>,
    shutdown: CancellationToken,
}

fn start() -> App {
    let (sink, task) = channel(CancellationToken::new());
    let (send, inbound) = mpsc::unbounded_channel();
    let (out, read) = mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(task, tokio_stream::wrappers::UnboundedReceiverStream::new(inbound), out, shutdown.clone().cancelled_owned()));
    App { send, read, sink, task, shutdown }
}

fn event(id: &str) -> pb::TopicEventRequest {
    pb::TopicEventRequest { id: id.to_string(), ..Default::default() }
}

fn processed(id: &str, status: Option<i32>) -> Result<pb::SubscribeTopicEventsRequestAlpha1, Status> {
    Ok(pb::SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(Req::EventProcessed(pb::SubscribeTopicEventsRequestProcessedAlpha1 {
            id: id.to_string(),
            status: status.map(|s| pb::TopicEventResponse { status: s }),
        })),
    })
}

async fn read_id(app: &mut App) -> String {
    match app.read.recv().await.and_then(|m| m.ok()).and_then(|m| m.subscribe_topic_events_response_type) {
        Some(Resp::EventMessage(e)) => e.id,
        other => panic!("expected an event_message, got {other:?}"),
    }
}

fn deliver(app: &App, id: &str) -> tokio::task::JoinHandle<Result<StreamAnswer, StreamError>> {
    let sink = app.sink.clone();
    let e = event(id);
    tokio::spawn(async move { sink.send_event(e).await })
}

#[test]
fn statuses_read_as_daprd() {
    assert_eq!(StreamAnswer::from_status(None), StreamAnswer::Success);
    assert_eq!(StreamAnswer::from_status(Some(&pb::TopicEventResponse { status: 0 })), StreamAnswer::Success);
    assert_eq!(StreamAnswer::from_status(Some(&pb::TopicEventResponse { status: 1 })), StreamAnswer::Retry);
    assert_eq!(StreamAnswer::from_status(Some(&pb::TopicEventResponse { status: 2 })), StreamAnswer::Drop);
    assert_eq!(StreamAnswer::from_status(Some(&pb::TopicEventResponse { status: 7 })), StreamAnswer::Unknown(7));
}

#[tokio::test]
async fn each_answer_reaches_the_delivery_with_its_id() {
    let mut app = start();
    let a = deliver(&app, "a");
    let b = deliver(&app, "b");
    let mut ids = vec![read_id(&mut app).await, read_id(&mut app).await];
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    app.send.send(processed("b", Some(2))).expect("task runs");
    app.send.send(processed("a", Some(1))).expect("task runs");
    assert_eq!(b.await.expect("task"), Ok(StreamAnswer::Drop));
    assert_eq!(a.await.expect("task"), Ok(StreamAnswer::Retry));
}

#[tokio::test]
async fn copies_with_one_id_are_answered_in_order() {
    let mut app = start();
    let first = deliver(&app, "x");
    read_id(&mut app).await;
    let second = deliver(&app, "x");
    read_id(&mut app).await;
    app.send.send(processed("x", Some(1))).expect("task runs");
    app.send.send(processed("x", None)).expect("task runs");
    assert_eq!(first.await.expect("task"), Ok(StreamAnswer::Retry));
    assert_eq!(second.await.expect("task"), Ok(StreamAnswer::Success));
}

#[tokio::test]
async fn answers_are_read_while_the_app_does_not_read_events() {
    let mut app = start();
    // More events than the outbound buffer holds: the task must keep reading answers anyway.
    let first = deliver(&app, "e0");
    assert_eq!(read_id(&mut app).await, "e0");
    let rest: Vec<_> = (1..12).map(|i| deliver(&app, &format!("e{i}"))).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.send.send(processed("e0", None)).expect("task runs");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), first).await.expect("answered").expect("task"), Ok(StreamAnswer::Success));
    for _ in 1..12 {
        let id = read_id(&mut app).await;
        app.send.send(processed(&id, Some(2))).expect("task runs");
    }
    for r in rest {
        assert_eq!(r.await.expect("task"), Ok(StreamAnswer::Drop));
    }
}

#[tokio::test]
async fn the_app_leaving_fails_waiting_and_new_deliveries() {
    let mut app = start();
    let waiting = deliver(&app, "a");
    read_id(&mut app).await;
    drop(app.send);
    assert_eq!(app.task.await.expect("task"), StreamEnd::AppGone);
    assert_eq!(waiting.await.expect("task"), Err(StreamError::Closed));
    assert!(app.sink.closed().is_cancelled());
    assert_eq!(app.sink.send_event(event("b")).await, Err(StreamError::Closed));
}

#[tokio::test]
async fn an_app_that_stops_reading_ends_the_stream() {
    let app = start();
    let waiting = deliver(&app, "a");
    drop(app.read);
    assert_eq!(app.task.await.expect("task"), StreamEnd::AppGone);
    assert_eq!(waiting.await.expect("task"), Err(StreamError::Closed));
}

#[tokio::test]
async fn a_second_initial_request_ends_the_stream() {
    let app = start();
    let initial = pb::SubscribeTopicEventsRequestAlpha1 { subscribe_topic_events_request_type: Some(Req::InitialRequest(Default::default())) };
    app.send.send(Ok(initial)).expect("task runs");
    assert_eq!(app.task.await.expect("task"), StreamEnd::DuplicateInitial);
}

#[tokio::test]
async fn shutdown_ends_the_stream() {
    let app = start();
    let waiting = deliver(&app, "a");
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.shutdown.cancel();
    assert_eq!(app.task.await.expect("task"), StreamEnd::Shutdown);
    assert_eq!(waiting.await.expect("task"), Err(StreamError::Closed));
}

#[tokio::test]
async fn a_late_answer_for_a_delivery_that_gave_up_is_ignored() {
    let mut app = start();
    let r = tokio::time::timeout(Duration::from_millis(50), app.sink.send_event(event("a"))).await;
    assert!(r.is_err(), "no answer came");
    assert_eq!(read_id(&mut app).await, "a");
    app.send.send(processed("a", Some(0))).expect("task runs");
    app.send.send(processed("nobody", Some(0))).expect("task runs");
    // The task is still serving.
    let b = deliver(&app, "b");
    assert_eq!(read_id(&mut app).await, "b");
    app.send.send(processed("b", Some(1))).expect("task runs");
    assert_eq!(b.await.expect("task"), Ok(StreamAnswer::Retry));
}

#[tokio::test]
async fn the_closed_token_fires_before_deliveries_fail_and_firing_it_ends_the_stream() {
    let mut app = start();
    let closed = app.sink.closed().clone();
    let sink = app.sink.clone();
    let waiting = tokio::spawn(async move {
        let r = sink.send_event(event("a")).await;
        (r, closed.is_cancelled())
    });
    read_id(&mut app).await;
    app.sink.closed().cancel();
    assert_eq!(app.task.await.expect("task"), StreamEnd::Shutdown);
    assert_eq!(waiting.await.expect("task"), (Err(StreamError::Closed), true));
}
