// State and metadata through the official Dapr JS SDK (@dapr/dapr, pinned in package.json),
// over HTTP and over gRPC, against a `rapr sidecar` started for this file on free ports.
//
// Run: (cd tests/sdk/js && node --test). RAPR_BIN overrides the binary
// (default: target/debug/rapr, relative to the repository root).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CommunicationProtocolEnum, DaprClient, LogLevel } from "@dapr/dapr";

import { freePort } from "./ports.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..", "..");
const RAPR_BIN = path.resolve(REPO_ROOT, process.env.RAPR_BIN ?? "target/debug/rapr");
const APP_ID = "sdk-tests-js";


const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await pred();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const uniq = (name) => `${name}-${randomUUID().slice(0, 12)}`;

const sidecar = {};
const clients = {};

function sidecarLogs() {
  const read = (p) => {
    try {
      return fs.readFileSync(p, "utf8").split("\n").slice(-200).join("\n");
    } catch {
      return "";
    }
  };
  return `----- sidecar stdout -----\n${read(sidecar.stdoutPath)}\n----- sidecar stderr -----\n${read(sidecar.stderrPath)}`;
}

before(async () => {
  if (!fs.existsSync(RAPR_BIN)) {
    throw new Error(`rapr binary not found at ${RAPR_BIN}: run cargo build --bin rapr or set RAPR_BIN`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rapr-sdk-js-"));
  const resources = path.join(dir, "components");
  fs.mkdirSync(resources);
  fs.writeFileSync(
    path.join(resources, "statestore.yaml"),
    `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: "${path.join(dir, "state.db")}"
`,
  );
  fs.writeFileSync(
    path.join(resources, "memstore.yaml"),
    `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: memstore
spec:
  type: state.in-memory
  version: v1
  metadata: []
`,
  );
  let httpPort = await freePort();
  let grpcPort = await freePort();
  while (grpcPort === httpPort) grpcPort = await freePort();
  Object.assign(sidecar, {
    dir,
    httpPort,
    grpcPort,
    stdoutPath: path.join(dir, "sidecar.stdout.log"),
    stderrPath: path.join(dir, "sidecar.stderr.log"),
  });
  const out = fs.openSync(sidecar.stdoutPath, "w");
  const err = fs.openSync(sidecar.stderrPath, "w");
  const args = [
    "sidecar",
    "--app-id", APP_ID,
    "--dapr-http-port", String(httpPort),
    "--dapr-grpc-port", String(grpcPort),
    "--metrics-port", "0", "--dapr-listen-addresses", "127.0.0.1",
    "--resources-path", resources,
    "--log-level", "info",
  ];
  sidecar.proc = spawn(RAPR_BIN, args, { stdio: ["ignore", out, err], cwd: REPO_ROOT });
  fs.closeSync(out);
  fs.closeSync(err);
  sidecar.exited = null;
  sidecar.proc.on("exit", (code, signal) => {
    sidecar.exited = { code, signal };
  });

  try {
    await waitUntil(
      async () => {
        if (sidecar.exited) throw new Error(`sidecar exited early: ${JSON.stringify(sidecar.exited)}`);
        try {
          const res = await fetch(`http://127.0.0.1:${httpPort}/v1.0/healthz`, {
            signal: AbortSignal.timeout(1000),
          });
          return res.status === 204;
        } catch (e) {
          if (sidecar.exited) throw e;
          return false;
        }
      },
      30_000,
      "GET /v1.0/healthz -> 204",
    );
  } catch (e) {
    sidecar.proc.kill("SIGKILL");
    throw new Error(`rapr sidecar did not become healthy: ${e.message}\ncommand: ${RAPR_BIN} ${args.join(" ")}\n${sidecarLogs()}`);
  }

  const logger = { level: LogLevel.Error };
  clients.HTTP = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: String(httpPort),
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    logger,
  });
  clients.GRPC = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: String(grpcPort),
    communicationProtocol: CommunicationProtocolEnum.GRPC,
    logger,
  });
  // start() runs the SDK's readiness probe (HTTP: GET /v1.0/metadata; gRPC: GetMetadata).
  await clients.HTTP.start();
  await clients.GRPC.start();
});

after(async () => {
  for (const c of Object.values(clients)) {
    try {
      await c.stop();
    } catch {
      // ignore
    }
  }
  if (sidecar.proc && !sidecar.exited) {
    sidecar.proc.kill("SIGTERM");
    try {
      await waitUntil(() => sidecar.exited, 10_000, "sidecar exit");
    } catch {
      sidecar.proc.kill("SIGKILL");
    }
  }
  if (process.exitCode) console.error(sidecarLogs());
});

const PROTOCOLS = ["HTTP", "GRPC"];
const STORES = ["statestore", "memstore"];

for (const proto of PROTOCOLS) {
  for (const store of STORES) {
    describe(`state ${proto} ${store}`, () => {
      test("save, get and delete", async () => {
        const c = clients[proto];
        const k1 = uniq("str");
        const k2 = uniq("obj");
        assert.deepEqual(
          await c.state.save(store, [
            { key: k1, value: "hello world" },
            { key: k2, value: { name: "rapr", n: 3, nested: { ok: true } } },
          ]),
          {},
        );
        assert.equal(await c.state.get(store, k1), "hello world");
        assert.deepEqual(await c.state.get(store, k2), { name: "rapr", n: 3, nested: { ok: true } });
        assert.deepEqual(await c.state.delete(store, k1), {});
        assert.equal(await c.state.get(store, k1), "");
        assert.deepEqual(await c.state.get(store, k2), { name: "rapr", n: 3, nested: { ok: true } });
      });

      test("get of a missing key is empty", async () => {
        assert.equal(await clients[proto].state.get(store, uniq("missing")), "");
      });

      test("getBulk, with a missing key", async () => {
        const c = clients[proto];
        const k1 = uniq("b1");
        const k2 = uniq("b2");
        const missing = uniq("bmissing");
        assert.deepEqual(
          await c.state.save(store, [
            { key: k1, value: { v: 1 } },
            { key: k2, value: "two" },
          ]),
          {},
        );
        const items = await c.state.getBulk(store, [k1, k2, missing]);
        assert.equal(items.length, 3);
        const byKey = Object.fromEntries(items.map((i) => [i.key, i]));
        assert.deepEqual(Object.keys(byKey).sort(), [k1, k2, missing].sort());
        assert.deepEqual(byKey[k1].data, { v: 1 });
        assert.equal(byKey[k2].data, "two");
        assert.equal(typeof byKey[k1].etag, "string");
        assert.notEqual(byKey[k1].etag, "");
        if (proto === "HTTP") {
          // daprd omits data and etag of a key it did not find.
          assert.deepEqual(byKey[missing], { key: missing });
        } else {
          assert.deepEqual(byKey[missing], { key: missing, data: "", etag: "" });
        }
      });

      test("transaction: upsert and delete", async () => {
        const c = clients[proto];
        const a = uniq("txa");
        const b = uniq("txb");
        const gone = uniq("txgone");
        assert.deepEqual(await c.state.save(store, [{ key: gone, value: "bye" }]), {});
        await c.state.transaction(store, [
          { operation: "upsert", request: { key: a, value: "A" } },
          { operation: "upsert", request: { key: b, value: "B" } },
          { operation: "delete", request: { key: gone } },
        ]);
        assert.equal(await c.state.get(store, a), "A");
        assert.equal(await c.state.get(store, b), "B");
        assert.equal(await c.state.get(store, gone), "");
      });
    });
  }

  describe(`query ${proto} statestore`, () => {
    test("filter, sort and paging", async () => {
      const c = clients[proto];
      const run = randomUUID();
      const docs = {
        [uniq("q1")]: { person: { org: "Dev Ops", id: 1036 }, city: "San Francisco", state: "CA", run },
        [uniq("q2")]: { person: { org: "Hardware", id: 1028 }, city: "Seattle", state: "WA", run },
        [uniq("q3")]: { person: { org: "Finance", id: 1071 }, city: "Sacramento", state: "CA", run },
        [uniq("q4")]: { person: { org: "Dev Ops", id: 1042 }, city: "Los Angeles", state: "CA", run },
      };
      assert.deepEqual(
        await c.state.save("statestore", Object.entries(docs).map(([key, value]) => ({
            key,
            value,
            // daprd stores a gRPC value as JSON (queryable) only when its contentType says so.
            metadata: { contentType: "application/json" },
          }))),
        {},
      );
      const keyOf = (id) => Object.keys(docs).find((k) => docs[k].person.id === id);
      const decode = (data) => (proto === "HTTP" ? data : JSON.parse(Buffer.from(data).toString("utf8")));

      const filter = { AND: [{ EQ: { state: "CA" } }, { EQ: { run } }] };
      const all = await c.state.query("statestore", {
        filter,
        sort: [{ key: "person.id", order: "DESC" }],
      });
      assert.deepEqual(
        all.results.map((r) => r.key),
        [keyOf(1071), keyOf(1042), keyOf(1036)],
      );
      for (const r of all.results) assert.deepEqual(decode(r.data), docs[r.key]);

      const page1 = await c.state.query("statestore", {
        filter,
        sort: [{ key: "person.id", order: "ASC" }],
        page: { limit: 2 },
      });
      assert.deepEqual(page1.results.map((r) => r.key), [keyOf(1036), keyOf(1042)]);
      assert.equal(typeof page1.token, "string");
      assert.notEqual(page1.token, "");
      const page2 = await c.state.query("statestore", {
        filter,
        sort: [{ key: "person.id", order: "ASC" }],
        page: { limit: 2, token: page1.token },
      });
      assert.deepEqual(page2.results.map((r) => r.key), [keyOf(1071)]);
    });
  });

  describe(`metadata ${proto}`, () => {
    test("get shows the app id and both stores", async () => {
      const md = await clients[proto].metadata.get();
      assert.equal(md.id, APP_ID);
      const comps = Object.fromEntries(md.components.map((x) => [x.name, x]));
      assert.equal(comps.statestore?.type, "state.sqlite");
      assert.equal(comps.statestore?.version, "v1");
      for (const cap of ["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"]) {
        assert.ok(comps.statestore.capabilities.includes(cap), `statestore lacks ${cap}: ${comps.statestore.capabilities}`);
      }
      assert.equal(comps.memstore?.type, "state.in-memory");
      assert.equal(comps.memstore?.version, "v1");
      assert.ok(comps.memstore.capabilities.includes("ETAG"));
      assert.ok(comps.memstore.capabilities.includes("TRANSACTIONAL"));
      assert.ok(!comps.memstore.capabilities.includes("QUERY_API"));
    });

    test("set then get shows the attribute in extended", async () => {
      const c = clients[proto];
      const key = uniq(`attr${proto}`);
      assert.equal(await c.metadata.set(key, `value-${proto}`), true);
      const md = await c.metadata.get();
      assert.equal(md.extended[key], `value-${proto}`);
    });
  });
}

describe("HTTP and gRPC see the same data", () => {
  test("saved over HTTP, read over gRPC and back", async () => {
    const k1 = uniq("cross1");
    const k2 = uniq("cross2");
    assert.deepEqual(await clients.HTTP.state.save("statestore", [{ key: k1, value: { from: "http", n: [1, 2] } }]), {});
    assert.deepEqual(await clients.GRPC.state.get("statestore", k1), { from: "http", n: [1, 2] });
    assert.deepEqual(await clients.GRPC.state.save("statestore", [{ key: k2, value: { from: "grpc" } }]), {});
    assert.deepEqual(await clients.HTTP.state.get("statestore", k2), { from: "grpc" });
  });
});
