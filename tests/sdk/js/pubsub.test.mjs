// Pub/sub through the official Dapr JS SDK (@dapr/dapr): `client.pubsub.publish` over HTTP and
// gRPC, to `DaprServer` apps subscribed with `server.pubsub.subscribe` over HTTP and over gRPC
// (`--app-protocol grpc`), on the in-memory and the embedded SQLite brokers. Each app publishes
// through its own sidecar (a sidecar delivers what is published on its own components). A RETRY
// answer is delivered again (under the component's inbound retry policy); DROP goes to the
// dead-letter topic.
//
// Run: (cd tests/sdk/js && node --test pubsub.test.mjs). RAPR_BIN overrides the binary.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CommunicationProtocolEnum, DaprClient, DaprPubSubStatusEnum, DaprServer, LogLevel } from "@dapr/dapr";

import { freePort } from "./ports.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..", "..");
const RAPR_BIN = path.resolve(REPO_ROOT, process.env.RAPR_BIN ?? "target/debug/rapr");
const logger = { level: LogLevel.Error };
const BROKERS = ["pubsub", "litepubsub"];
const RUN = crypto.randomUUID().slice(0, 8);
const TOPIC = `orders-${RUN}`;
const RETRY_TOPIC = `retry-${RUN}`;
const DROP_TOPIC = `drop-${RUN}`;
const DEAD_TOPIC = `dead-${RUN}`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rapr-sdk-js-pubsub-"));
const sidecars = [];
const servers = [];
const apps = {};
/** Events each app saw, per `${pubsub}/${topic}`. */
const seen = {};

function record(appId, pubsub, topic, data) {
  const key = `${appId}:${pubsub}/${topic}`;
  (seen[key] ??= []).push(data);
  return seen[key].length;
}

function components(appId) {
  const d = path.join(dir, appId, "components");
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, "pubsub.yaml"), `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: litepubsub
spec:
  type: pubsub.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: "${path.join(dir, appId, "pubsub.db")}"
  - name: redeliverInterval
    value: 200ms
  - name: processingTimeout
    value: 5s
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: quick-inbound
spec:
  policies:
    retries:
      quick:
        policy: constant
        duration: 50ms
        maxRetries: 3
  targets:
    components:
      pubsub:
        inbound:
          retry: quick
      litepubsub:
        inbound:
          retry: quick
`);
  return d;
}

function logs(sc) {
  const read = (p) => {
    try {
      return fs.readFileSync(p, "utf8").split("\n").slice(-100).join("\n");
    } catch {
      return "";
    }
  };
  return `----- ${sc.appId} stdout -----\n${read(sc.out)}\n----- ${sc.appId} stderr -----\n${read(sc.err)}`;
}

async function startSidecar(appId, extra = []) {
  const httpPort = await freePort();
  const grpcPort = await freePort();
  const sc = { appId, httpPort, grpcPort, out: path.join(dir, `${appId}.out.log`), err: path.join(dir, `${appId}.err.log`), exited: null };
  const out = fs.openSync(sc.out, "w");
  const err = fs.openSync(sc.err, "w");
  const args = ["sidecar", "--app-id", appId, "--dapr-http-port", String(httpPort), "--dapr-grpc-port", String(grpcPort),
    "--metrics-port", "0", "--dapr-listen-addresses", "127.0.0.1", "--resources-path", components(appId), "--log-level", "info", ...extra];
  sc.proc = spawn(RAPR_BIN, args, { stdio: ["ignore", out, err], cwd: REPO_ROOT, env: { ...process.env, RAPR_HOME: path.join(dir, "home") } });
  fs.closeSync(out);
  fs.closeSync(err);
  sc.proc.on("exit", (code, signal) => (sc.exited = { code, signal }));
  sidecars.push(sc);
  try {
    await waitUntil(async () => {
      if (sc.exited) throw new Error(`sidecar exited early: ${JSON.stringify(sc.exited)}`);
      try {
        return (await fetch(`http://127.0.0.1:${httpPort}/v1.0/healthz`, { signal: AbortSignal.timeout(1000) })).status === 204;
      } catch {
        return false;
      }
    }, 30_000, `${appId} healthy`);
  } catch (e) {
    throw new Error(`${e.message}\n${logs(sc)}`);
  }
  return sc;
}

/** A DaprServer app subscribed to the test topics on both brokers, behind its own sidecar. */
async function startApp(appId, proto) {
  const serverPort = await freePort();
  const grpc = proto === "GRPC";
  const server = new DaprServer({
    serverHost: "127.0.0.1",
    serverPort: String(serverPort),
    communicationProtocol: grpc ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP,
    logger,
    clientOptions: { daprHost: "127.0.0.1", daprPort: "0", logger },
  });
  for (const broker of BROKERS) {
    await server.pubsub.subscribe(broker, TOPIC, async (data) => {
      record(appId, broker, TOPIC, data);
    });
    await server.pubsub.subscribeWithOptions(broker, RETRY_TOPIC, {
      deadLetterTopic: DEAD_TOPIC,
      callback: async (data) => (record(appId, broker, RETRY_TOPIC, data) === 1 ? DaprPubSubStatusEnum.RETRY : DaprPubSubStatusEnum.SUCCESS),
    });
    await server.pubsub.subscribeWithOptions(broker, DROP_TOPIC, {
      deadLetterTopic: DEAD_TOPIC,
      callback: async (data) => {
        record(appId, broker, DROP_TOPIC, data);
        return DaprPubSubStatusEnum.DROP;
      },
    });
    await server.pubsub.subscribe(broker, DEAD_TOPIC, async (data) => {
      record(appId, broker, DEAD_TOPIC, data);
    });
  }
  // The app listens (and knows its subscriptions) before its sidecar asks for them.
  await server.daprServer.start("127.0.0.1", String(serverPort));
  const sc = await startSidecar(appId, ["--app-port", String(serverPort), ...(grpc ? ["--app-protocol", "grpc"] : [])]);
  servers.push(server);
  const clients = {
    HTTP: new DaprClient({ daprHost: "127.0.0.1", daprPort: String(sc.httpPort), communicationProtocol: CommunicationProtocolEnum.HTTP, logger }),
    GRPC: new DaprClient({ daprHost: "127.0.0.1", daprPort: String(sc.grpcPort), communicationProtocol: CommunicationProtocolEnum.GRPC, logger }),
  };
  await clients.HTTP.start();
  await clients.GRPC.start();
  // Subscriptions are running once the metadata lists them all.
  await waitUntil(async () => {
    const m = await (await fetch(`http://127.0.0.1:${sc.httpPort}/v1.0/metadata`)).json();
    return (m.subscriptions ?? []).length >= 4 * BROKERS.length;
  }, 20_000, `${appId} subscriptions`).catch((e) => {
    throw new Error(`${e.message}\n${logs(sc)}`);
  });
  apps[proto] = { appId, sc, clients };
}

before(async () => {
  if (!fs.existsSync(RAPR_BIN)) throw new Error(`rapr binary not found at ${RAPR_BIN}`);
  await startApp("js-ps-http", "HTTP");
  await startApp("js-ps-grpc", "GRPC");
});

const bounded = (p, ms) => Promise.race([p.catch(() => {}), sleep(ms)]);

after(async () => {
  for (const a of Object.values(apps)) for (const c of Object.values(a.clients)) await bounded(c.stop(), 5_000);
  for (const sc of sidecars) {
    if (sc.exited) continue;
    sc.proc.kill("SIGTERM");
    await waitUntil(() => sc.exited, 10_000, "sidecar exit").catch(() => sc.proc.kill("SIGKILL"));
  }
  for (const s of servers) await bounded(s.stop(), 5_000);
  if (process.exitCode) for (const sc of sidecars) console.error(logs(sc));
});

const matching = (appId, broker, topic, tag) => (seen[`${appId}:${broker}/${topic}`] ?? []).filter((d) => d?.tag === tag);

for (const appProto of ["HTTP", "GRPC"]) {
  describe(`DaprServer ${appProto} subscriber`, () => {
    for (const broker of BROKERS) {
      for (const clientProto of ["HTTP", "GRPC"]) {
        test(`gets an event published over ${clientProto} on ${broker}`, async () => {
          const { appId, clients } = apps[appProto];
          const tag = crypto.randomUUID();
          const res = await clients[clientProto].pubsub.publish(broker, TOPIC, { tag, via: clientProto });
          assert.equal(res.error, undefined, String(res.error));
          const got = await waitUntil(() => matching(appId, broker, TOPIC, tag)[0], 15_000, "the event");
          assert.deepEqual(got, { tag, via: clientProto });
        });
      }

      test(`RETRY is delivered again on ${broker}`, async () => {
        const { appId, clients } = apps[appProto];
        const tag = crypto.randomUUID();
        await clients.GRPC.pubsub.publish(broker, RETRY_TOPIC, { tag });
        await waitUntil(() => matching(appId, broker, RETRY_TOPIC, tag).length >= 2, 15_000, "a second delivery");
        await sleep(300);
        assert.equal(matching(appId, broker, RETRY_TOPIC, tag).length, 2, "settled by the SUCCESS");
        assert.equal(matching(appId, broker, DEAD_TOPIC, tag).length, 0, "not dead-lettered");
      });

      test(`DROP goes to the dead-letter topic on ${broker}`, async () => {
        const { appId, clients } = apps[appProto];
        const tag = crypto.randomUUID();
        await clients.HTTP.pubsub.publish(broker, DROP_TOPIC, { tag });
        await waitUntil(() => matching(appId, broker, DEAD_TOPIC, tag).length === 1, 15_000, "the dead letter");
        assert.equal(matching(appId, broker, DROP_TOPIC, tag).length, 1);
      });
    }
  });
}

test("publishing to an unknown pub/sub fails", async () => {
  const { clients } = apps.HTTP;
  const res = await clients.HTTP.pubsub.publish("nosuchpubsub", TOPIC, { x: 1 });
  assert.match(String(res.error?.message ?? JSON.stringify(res.error)), /ERR_PUBSUB_NOT_FOUND|nosuchpubsub/);
  await assert.rejects(clients.GRPC.pubsub.publish("nosuchpubsub", TOPIC, { x: 1 }));
});
