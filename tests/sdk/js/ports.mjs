// Free TCP ports for the SDK tests' sidecars and apps, picked as rapr's own allocator does
// (src/net_ports.rs): from the range below the kernel's ephemeral range, which outgoing
// connections never take (binding port 0 and releasing it races with every connection the
// machine opens meanwhile), walking from a random start so this process never hands out the same
// port twice and concurrent test processes rarely meet; each candidate is bind-checked on every
// interface, as the SDK's DaprServer listens on all of them.
import fs from "node:fs";
import net from "node:net";

const FLOOR = 20000;

function range() {
  let low = 32768;
  try {
    low = Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || low;
  } catch {
    // keep Linux's default
  }
  return low > FLOOR + 1000 ? [FLOOR, low] : [10000, 20000];
}

const [LOW, HIGH] = range();
let cursor = Math.floor(Math.random() * (HIGH - LOW));

function bindable(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "0.0.0.0", () => srv.close(() => resolve(true)));
  });
}

/** A port nothing listens on, never handed out before by this process. */
export async function freePort() {
  for (let tries = 0; tries < HIGH - LOW; tries++) {
    const port = LOW + (cursor++ % (HIGH - LOW));
    if (await bindable(port)) return port;
  }
  throw new Error(`no free port in ${LOW}..${HIGH}`);
}
