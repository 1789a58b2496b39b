//! The baselines of the pub/sub scenarios — each broker driven by its own Rust client in this
//! process, with no sidecar — and the subscriber app the end-to-end scenario delivers to.
//!
//! Redis: `XADD <stream> MAXLEN ~ n * data <payload> metadata {}` (the entry layout and trimming
//! pubsub.redis writes), and for the round trip one `XREADGROUP ... BLOCK` consumer that `XACK`s
//! every entry, as the component's reader does. SQLite: rapr's `SqliteBroker` opened on its own
//! file (`publish` returns after the committed write; `subscribe` is the broker's own consumer).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::loadgen::{CallFuture, Caller, Connect};
use super::pubsub::{await_delivery, payload_with_id, unique, Waiters};
use super::Ctx;
use crate::components::metadata::ComponentMetadata;
use crate::components::pubsub::sqlite::{BrokerConfig, SqliteBroker};
use crate::components::pubsub::{Message, MessageHandler, Outcome, PubSub, PublishRequest, SubscribeRequest};

/// `MAXLEN ~` of the baseline's XADD and the sidecar's `maxLenApprox`.
pub const MAXLEN: u64 = 10_000;

/// A broker driven directly.
pub enum Broker {
    /// A stream of the shared Redis.
    Redis {
        /// `redis://host:port/`.
        url: String,
        /// The stream (unique to this run).
        stream: String,
    },
    /// An embedded broker on its own file.
    Sqlite {
        /// The broker.
        broker: Arc<SqliteBroker>,
        /// The topic (unique to this run).
        topic: String,
    },
}

impl Broker {
    /// Opens `kind` for the scenario tagged `tag`.
    pub async fn open(ctx: &Ctx, kind: &str, tag: &str) -> Result<Self, String> {
        match kind {
            "redis" => Ok(Broker::Redis { url: format!("redis://{}/", ctx.args.redis), stream: unique(&format!("{tag}-direct")) }),
            "sqlite" => {
                let file = ctx.dir.join(format!("{tag}-direct.db")).display().to_string();
                let pairs = vec![("connectionString".to_string(), file), ("consumerID".to_string(), "bench".to_string())];
                let cfg = BrokerConfig::from_metadata(&mut ComponentMetadata::new("bench-direct", &pairs)).map_err(|e| e.to_string())?;
                let broker = SqliteBroker::open(&format!("bench-{tag}-direct"), cfg).await.map_err(|e| e.to_string())?;
                Ok(Broker::Sqlite { broker: Arc::new(broker), topic: unique(&format!("{tag}-direct")) })
            }
            other => Err(format!("unknown broker {other:?}: use redis or sqlite")),
        }
    }

    /// Callers publishing `payload`, each on its own connection (Redis) or sharing the broker.
    pub fn publisher(&self, payload: Bytes) -> Connect {
        self.callers(move |_| payload.clone(), None)
    }

    /// Callers publishing a message and waiting until the consumer of `consume` holds it.
    pub fn round_trip(&self, waiters: Waiters, size: usize) -> Connect {
        self.callers(move |id| payload_with_id(id, size), Some(waiters))
    }

    fn callers(&self, body: impl Fn(u64) -> Bytes + Send + Sync + 'static, waiters: Option<Waiters>) -> Connect {
        let body: Arc<dyn Fn(u64) -> Bytes + Send + Sync> = Arc::new(body);
        match self {
            Broker::Redis { url, stream } => {
                let (url, stream) = (url.clone(), stream.clone());
                Arc::new(move || {
                    let (url, stream, body, waiters) = (url.clone(), stream.clone(), Arc::clone(&body), waiters.clone());
                    Box::pin(async move {
                        let conn = redis_conn(&url).await?;
                        Ok(Box::new(Direct { target: Target::Redis { conn, stream }, body, waiters }) as Box<dyn Caller>)
                    })
                })
            }
            Broker::Sqlite { broker, topic } => {
                let (broker, topic) = (Arc::clone(broker), topic.clone());
                Arc::new(move || {
                    let target = Target::Sqlite { broker: Arc::clone(&broker), topic: topic.clone() };
                    let (body, waiters) = (Arc::clone(&body), waiters.clone());
                    Box::pin(async move { Ok(Box::new(Direct { target, body, waiters }) as Box<dyn Caller>) })
                })
            }
        }
    }

    /// Starts the consumer that hands every message to `waiters`; cancel the token to stop it.
    pub async fn consume(&self, waiters: Waiters) -> Result<CancellationToken, String> {
        let stop = CancellationToken::new();
        match self {
            Broker::Redis { url, stream } => {
                let mut conn = redis_conn(url).await?;
                let mut create = redis::cmd("XGROUP");
                create.arg("CREATE").arg(stream).arg("bench").arg("$").arg("MKSTREAM");
                create.query_async::<()>(&mut conn).await.map_err(|e| format!("XGROUP CREATE: {e}"))?;
                tokio::spawn(redis_consumer(conn, stream.clone(), waiters, stop.clone()));
            }
            Broker::Sqlite { broker, topic } => {
                let req = SubscribeRequest { topic: topic.clone(), metadata: HashMap::new() };
                broker.subscribe(req, Arc::new(Handler(waiters)), stop.clone()).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(stop)
    }

    /// Removes what the baseline wrote to a shared server (the Redis stream).
    pub async fn cleanup(&self) {
        match self {
            Broker::Redis { url, stream } => {
                if let Ok(mut conn) = redis_conn(url).await {
                    let _ = redis::cmd("DEL").arg(stream).query_async::<i64>(&mut conn).await;
                }
            }
            Broker::Sqlite { broker, .. } => broker.close().await,
        }
    }
}

async fn redis_conn(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    client.get_multiplexed_async_connection().await.map_err(|e| format!("redis: {e}"))
}

enum Target {
    Redis { conn: redis::aio::MultiplexedConnection, stream: String },
    Sqlite { broker: Arc<SqliteBroker>, topic: String },
}

struct Direct {
    target: Target,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    waiters: Option<Waiters>,
}

impl Caller for Direct {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            let wait = self.waiters.as_ref().map(|w| w.register());
            let data = (self.body)(wait.as_ref().map_or(0, |(id, _)| *id));
            let sent = match &mut self.target {
                Target::Redis { conn, stream } => {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(&*stream).arg("MAXLEN").arg("~").arg(MAXLEN).arg("*").arg("data").arg(data.as_ref()).arg("metadata").arg("{}");
                    cmd.query_async::<String>(conn).await.map(|_| ()).map_err(|e| e.to_string())
                }
                Target::Sqlite { broker, topic } => {
                    let req = PublishRequest { topic: topic.clone(), data, content_type: Some("application/json".into()), metadata: HashMap::new() };
                    broker.publish(req).await.map_err(|e| e.to_string())
                }
            };
            match (wait, &self.waiters) {
                (Some((id, rx)), Some(w)) => match sent {
                    Ok(()) => await_delivery(w, id, rx).await,
                    Err(e) => {
                        w.forget(id);
                        Err(e)
                    }
                },
                _ => sent,
            }
        })
    }
}

/// The SQLite baseline's subscriber: hands each message to the waiters and acknowledges it.
struct Handler(Waiters);

#[async_trait]
impl MessageHandler for Handler {
    async fn handle(&self, msg: Message) -> Outcome {
        self.0.arrived(&msg.data);
        Outcome::Ack
    }
}

/// Reads the stream as group `bench`, hands each entry's `data` to the waiters, and acks it.
async fn redis_consumer(mut conn: redis::aio::MultiplexedConnection, stream: String, waiters: Waiters, stop: CancellationToken) {
    loop {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg("bench").arg("bench").arg("COUNT").arg(100).arg("BLOCK").arg(200).arg("STREAMS").arg(&stream).arg(">");
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            r = cmd.query_async::<redis::Value>(&mut conn) => r,
        };
        let entries = match reply {
            Ok(v) => entries(v),
            Err(e) => {
                tracing::warn!(error = %e, "bench redis consumer: XREADGROUP failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(&stream).arg("bench");
        for (id, data) in &entries {
            waiters.arrived(data);
            ack.arg(id.as_slice());
        }
        if let Err(e) = ack.query_async::<i64>(&mut conn).await {
            tracing::warn!(error = %e, "bench redis consumer: XACK failed");
        }
    }
}

/// (entry id, `data` field) of every entry of an `XREADGROUP` reply.
fn entries(v: redis::Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    use redis::Value;
    let mut out = Vec::new();
    let Value::Array(streams) = v else { return out };
    for s in streams {
        let Value::Array(mut kv) = s else { continue };
        let Some(Value::Array(list)) = kv.pop() else { continue };
        for e in list {
            let Value::Array(pair) = e else { continue };
            let mut it = pair.into_iter();
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (it.next(), it.next()) else { continue };
            let data = fields.chunks(2).find_map(|c| match c {
                [Value::BulkString(k), Value::BulkString(d)] if k.as_slice() == b"data" => Some(d.clone()),
                _ => None,
            });
            out.push((id, data.unwrap_or_default()));
        }
    }
    out
}

/// The app the end-to-end scenario's sidecar delivers to, served in this process so delivery can
/// be matched to its publish: `GET /dapr/subscribe` answers `[]` (the subscription is a file),
/// `POST /events` hands the CloudEvent to the waiters and answers `{"status":"SUCCESS"}`.
pub struct SubscriberApp {
    /// Its HTTP port.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SubscriberApp {
    /// Listens on a free port.
    pub async fn start(waiters: Waiters) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|e| format!("subscriber app: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let w = waiters.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(w.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Ok(Self { port, task })
    }
}

impl Drop for SubscriberApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(waiters: Waiters, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (status, answer) = match (method.as_str(), path.as_str()) {
        ("GET", "/dapr/subscribe") => (200, "[]"),
        ("POST", "/events") => {
            waiters.arrived(&body);
            (200, "{\"status\":\"SUCCESS\"}")
        }
        _ => (404, ""),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(answer.as_bytes())));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::NOT_FOUND);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn entries_are_read_from_an_xreadgroup_reply() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![b("1-0"), Value::Array(vec![b("data"), b("{\"bid\":1}"), b("metadata"), b("{}")])]);
        let v = Value::Array(vec![Value::Array(vec![b("s"), Value::Array(vec![entry])])]);
        assert_eq!(entries(v), vec![(b"1-0".to_vec(), b"{\"bid\":1}".to_vec())]);
        assert!(entries(Value::Nil).is_empty());
    }
}
