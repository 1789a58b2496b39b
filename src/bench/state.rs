//! `state-get` and `state-save`: one key of `--payload` bytes read or written through the
//! sidecar (HTTP and gRPC) on each of `--stores`, against the same server driven directly by its
//! Rust driver in the same run (the baseline). Redis direct is `HGETALL` / `HSET data version`
//! (the plain commands under Dapr's layout; the component runs its ETag-checking Lua scripts, so
//! some gap is the script's); PostgreSQL direct is the component's own prepared statement on its
//! table. The embedded SQLite store has no separate server to drive, so it has no baseline row.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use rapr_proto::common::v1::StateItem;
use rapr_proto::runtime::v1::dapr_client::DaprClient;
use rapr_proto::runtime::v1::{GetStateRequest, SaveStateRequest};
use tonic::transport::Channel;

use super::callers::{self, HttpShape};
use super::loadgen::{CallFuture, Caller, Connect};
use super::report::Row;
use super::{Ctx, Variant};

const STORE: &str = "benchstore";
const KEY: &str = "bench-key";
const TABLE: &str = "rapr_bench_state";
/// Its own metadata table: the migration level lives there (daprd's layout), shared by every
/// state table using the same one, so with the default `dapr_metadata` an earlier component's
/// level would keep `rapr_bench_state` from ever being created.
const METADATA_TABLE: &str = "rapr_bench_state_metadata";

/// Runs the scenario for every store of the flags.
pub async fn run(ctx: &Ctx, save: bool) -> Result<Vec<Row>, String> {
    let scenario = if save { "state-save" } else { "state-get" };
    let mut rows = Vec::new();
    for store in &ctx.args.stores {
        let sc = store_sidecar(ctx, scenario, store).await?;
        let payload = ctx.payload();
        let name = format!("{scenario} {store}");
        let mut variants: Vec<Variant<'_>> = Vec::new();
        if let Some(c) = direct(ctx, store, save, payload.clone(), stored_key(store)) {
            variants.push(Variant::new("direct", c, vec![], "driver only"));
        }
        variants.push(Variant::new("rapr http", callers::http(sc.http, http_shape(save, &payload)), vec![&sc.proc], "sidecar"));
        variants.push(Variant::new("rapr grpc", grpc(sc.grpc, save, payload.clone()), vec![&sc.proc], "sidecar"));
        let mut mine = ctx.rounds(&name, &variants).await?;
        rows.append(&mut mine);
    }
    Ok(rows)
}

/// A sidecar with `store` as its one state store, the benchmark's key written (so reads find it,
/// and the first save has created any table).
pub(super) async fn store_sidecar(ctx: &Ctx, scenario: &str, store: &str) -> Result<super::sidecar::Sidecar, String> {
    let component = component(ctx, store)?;
    let res = ctx.dir.join(format!("{scenario}-{store}-resources"));
    std::fs::create_dir_all(&res).map_err(|e| e.to_string())?;
    std::fs::write(res.join("store.yaml"), component).map_err(|e| e.to_string())?;
    let sc = ctx.sidecar(&format!("bench-state-{store}"), &res, &[]).await?;
    let seed = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1.0/state/{STORE}", sc.http))
        .header("content-type", "application/json")
        .body(save_body(&ctx.payload()))
        .send()
        .await
        .map_err(|e| format!("seeding {store}: {e}"))?;
    if !seed.status().is_success() {
        return Err(format!("seeding {store}: HTTP {}: {}", seed.status(), seed.text().await.unwrap_or_default()));
    }
    Ok(sc)
}

/// The key as the sidecar stores it: Dapr's default key prefix is the app id, so the driver
/// reads the row the sidecar wrote.
pub(super) fn stored_key(store: &str) -> String {
    format!("bench-state-{store}||{KEY}")
}

fn save_body(payload: &Bytes) -> Bytes {
    Bytes::from(format!("[{{\"key\":\"{KEY}\",\"value\":{}}}]", String::from_utf8_lossy(payload)))
}

/// The HTTP API request of a get or a save of the benchmark's key.
pub(super) fn http_shape(save: bool, payload: &Bytes) -> HttpShape {
    if save {
        HttpShape { method: Method::POST, path: format!("/v1.0/state/{STORE}"), body: save_body(payload), content_type: Some("application/json") }
    } else {
        HttpShape { method: Method::GET, path: format!("/v1.0/state/{STORE}/{KEY}"), body: Bytes::new(), content_type: None }
    }
}

/// The component YAML for `store`.
fn component(ctx: &Ctx, store: &str) -> Result<String, String> {
    let (kind, md) = match store {
        "redis" => ("state.redis", format!("  - name: redisHost\n    value: \"{}\"\n", ctx.args.redis)),
        "postgres" | "postgresql" => ("state.postgresql", format!("  - name: connectionString\n    value: \"{}\"\n  - name: tableName\n    value: {TABLE}\n  - name: metadataTableName\n    value: {METADATA_TABLE}\n", ctx.args.postgres)),
        "sqlite" => ("state.sqlite", format!("  - name: connectionString\n    value: \"{}\"\n", ctx.dir.join("bench-state.db").display())),
        other => return Err(format!("unknown store {other:?}: use redis, postgres or sqlite")),
    };
    Ok(format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {STORE}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n{md}"))
}

/// The direct-driver baseline for `store`, if it has a server of its own.
pub(super) fn direct(ctx: &Ctx, store: &str, save: bool, payload: Bytes, key: String) -> Option<Connect> {
    match store {
        "redis" => {
            let url = format!("redis://{}/", ctx.args.redis);
            Some(Arc::new(move || {
                let (url, payload, key) = (url.clone(), payload.clone(), key.clone());
                Box::pin(async move {
                    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                    let conn = client.get_multiplexed_async_connection().await.map_err(|e| format!("redis: {e}"))?;
                    Ok(Box::new(RedisDirect { conn, save, payload, key }) as Box<dyn Caller>)
                })
            }))
        }
        "postgres" | "postgresql" => {
            let conn_str = ctx.args.postgres.clone();
            Some(Arc::new(move || {
                let (conn_str, payload, key) = (conn_str.clone(), payload.clone(), key.clone());
                Box::pin(async move {
                    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await.map_err(|e| format!("postgres: {e}"))?;
                    tokio::spawn(conn);
                    let sql = if save {
                        format!("INSERT INTO {TABLE} AS t (key, value, isbinary) VALUES ($1, CAST($2::text AS jsonb), false) ON CONFLICT (key) DO UPDATE SET value = excluded.value, isbinary = excluded.isbinary, updatedate = CURRENT_TIMESTAMP")
                    } else {
                        format!("SELECT key, value::text, isbinary, xmin::text FROM {TABLE} WHERE key = $1")
                    };
                    let stmt = client.prepare(&sql).await.map_err(|e| format!("postgres: {e}"))?;
                    let value = String::from_utf8_lossy(&payload).into_owned();
                    Ok(Box::new(PgDirect { client, stmt, save, value, key }) as Box<dyn Caller>)
                })
            }))
        }
        _ => None,
    }
}

struct RedisDirect {
    conn: redis::aio::MultiplexedConnection,
    save: bool,
    payload: Bytes,
    key: String,
}

impl Caller for RedisDirect {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            if self.save {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&self.key).arg("data").arg(self.payload.as_ref()).arg("version").arg(1);
                cmd.query_async::<i64>(&mut self.conn).await.map(|_| ()).map_err(|e| e.to_string())
            } else {
                let v: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(&self.key).query_async(&mut self.conn).await.map_err(|e| e.to_string())?;
                if v.is_empty() {
                    return Err("HGETALL found no key".into());
                }
                Ok(())
            }
        })
    }
}

struct PgDirect {
    client: tokio_postgres::Client,
    stmt: tokio_postgres::Statement,
    save: bool,
    value: String,
    key: String,
}

impl Caller for PgDirect {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            if self.save {
                self.client.execute(&self.stmt, &[&self.key, &self.value]).await.map(|_| ()).map_err(|e| e.to_string())
            } else {
                let row = self.client.query_opt(&self.stmt, &[&self.key]).await.map_err(|e| e.to_string())?;
                row.map(|_| ()).ok_or_else(|| "no row".into())
            }
        })
    }
}

struct GrpcState {
    client: DaprClient<Channel>,
    save: bool,
    payload: Bytes,
}

impl Caller for GrpcState {
    fn call(&mut self) -> CallFuture<'_> {
        Box::pin(async move {
            let r = if self.save {
                let item = StateItem { key: KEY.into(), value: self.payload.to_vec(), ..Default::default() };
                self.client.save_state(SaveStateRequest { store_name: STORE.into(), states: vec![item] }).await.map(|_| ())
            } else {
                self.client.get_state(GetStateRequest { store_name: STORE.into(), key: KEY.into(), ..Default::default() }).await.map(|_| ())
            };
            r.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    }
}

/// `GetState` / `SaveState` on the sidecar's gRPC port, each caller on its own connection.
pub(super) fn grpc(port: u16, save: bool, payload: Bytes) -> Connect {
    Arc::new(move || {
        let payload = payload.clone();
        Box::pin(async move { Ok(Box::new(GrpcState { client: DaprClient::new(callers::channel(port).await?), save, payload }) as Box<dyn Caller>) })
    })
}
