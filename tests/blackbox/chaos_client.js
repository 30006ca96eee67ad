// Drives `tcpkit relay --api` with toxiproxy's own Node client
// (toxiproxy-node-client from npm) and measures what each toxic does to a
// real connection on loopback. test_chaos.py runs one scenario per call:
//
//   node chaos_client.js SCENARIO
//
// with API (host:port of the relay's API) and TOXIPROXY_CLIENT (the path of
// the installed npm package) in the environment. The script prints one JSON
// line of measurements; the Python test asserts on them, so a wrong number
// fails there with the whole line in the message. Every wait here is bounded.
"use strict";

const net = require("net");
const { Toxiproxy } = require(process.env.TOXIPROXY_CLIENT);

const toxiproxy = new Toxiproxy(`http://${process.env.API}`);
const LIMIT_MS = 8000;

// The upstream: a line "send N" makes it send N bytes and close; anything
// else is echoed. One server serves every scenario.
function startUpstream() {
  const server = net.createServer((sock) => {
    let mode = null;
    let head = Buffer.alloc(0);
    sock.on("error", () => {});
    sock.on("data", (data) => {
      if (mode === "echo") return sock.write(data);
      head = Buffer.concat([head, data]);
      const text = head.toString("latin1");
      const m = /^send (\d+)\n/.exec(text);
      if (m) {
        mode = "send";
        sock.end(Buffer.alloc(Number(m[1]), 0x78));
      } else if (!(text.startsWith("send ") || "send ".startsWith(text))) {
        mode = "echo";
        sock.write(head);
      }
    });
    sock.on("end", () => sock.end());
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function withTimeout(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${LIMIT_MS} ms`)), LIMIT_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

function connect(port) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1", () => resolve(sock));
    sock.once("error", reject);
  }), "connect");
}

function portOf(proxy) {
  return Number(proxy.listen.split(":").pop());
}

// Reads everything until the connection ends; answers the chunks, how it
// ended ("end" or an error code) and when, in ms after `start`.
function readAll(sock, start) {
  return withTimeout(new Promise((resolve) => {
    const chunks = [];
    let done = false;
    const finish = (how) => {
      if (done) return;
      done = true;
      resolve({ chunks, how, ms: Date.now() - start, firstMs: chunks.length ? chunks[0].ms : null });
    };
    sock.on("data", (d) => chunks.push({ size: d.length, ms: Date.now() - start, data: d }));
    sock.on("end", () => finish("end"));
    sock.on("error", (e) => finish(e.code));
    sock.on("close", () => finish("close"));
  }), "read");
}

// Sends `text` on an echo connection and waits for `text` to come back.
function roundTrip(sock, text) {
  return withTimeout(new Promise((resolve) => {
    const start = process.hrtime.bigint();
    let got = "";
    const onData = (d) => {
      got += d.toString("latin1");
      if (got.length >= text.length) {
        sock.off("data", onData);
        resolve({ ms: Number(process.hrtime.bigint() - start) / 1e6, got });
      }
    };
    sock.on("data", onData);
    sock.write(text);
  }), "round trip");
}

async function medianRtt(sock, rounds = 5) {
  const times = [];
  for (let i = 0; i < rounds; i++) times.push((await roundTrip(sock, `ping ${i}\n`)).ms);
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

// Waits `ms` and answers whether anything arrived meanwhile: the only way
// to see that a connection holds data back is to watch it for a while.
function quietFor(sock, ms) {
  return new Promise((resolve) => {
    let seen = 0;
    const onData = (d) => { seen += d.length; };
    sock.on("data", onData);
    setTimeout(() => { sock.off("data", onData); resolve(seen); }, ms);
  });
}

function lengthFrame(text) {
  const body = Buffer.from(text);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

async function echoThrough(proxy, payload, expectBytes) {
  const sock = await connect(portOf(proxy));
  const reading = withTimeout(new Promise((resolve) => {
    let got = Buffer.alloc(0);
    sock.on("data", (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= expectBytes) resolve(got);
    });
  }), "echo");
  sock.write(payload);
  const got = await reading;
  sock.destroy();
  return got;
}

const scenarios = {
  async api(upstream) {
    const version = await toxiproxy.getVersion();
    const proxy = await toxiproxy.createProxy({ name: "api", listen: "127.0.0.1:0", upstream });
    let conflict = null;
    try {
      await toxiproxy.createProxy({ name: "api", listen: "127.0.0.1:0", upstream });
    } catch (e) { conflict = e.message; }
    let missing = null;
    try { await toxiproxy.get("nope"); } catch (e) { missing = e.message; }
    const toxic = await proxy.addToxic({ type: "latency", attributes: { latency: 5 } });
    const again = await proxy.getToxic(toxic.name);
    const updated = await again.update({ attributes: { latency: 7 } });
    const populated = await toxiproxy.populate([{ name: "pop", listen: "127.0.0.1:0", upstream }]);
    const all = await toxiproxy.getAll();
    const disabled = await proxy.update({ enabled: false });
    let refused = null;
    try { (await connect(portOf(proxy))).destroy(); } catch (e) { refused = e.code; }
    const enabled = await disabled.update({ enabled: true });
    const echoed = (await echoThrough(enabled, "back again\n", 11)).toString();
    await toxiproxy.reset();
    const afterReset = await toxiproxy.get("api");
    await populated.pop.remove();
    await proxy.remove();
    return {
      version, conflict, missing, toxic: toxic.toJson(), updated: updated.toJson(),
      names: Object.keys(all).sort(), enabledAfterDisable: disabled.enabled, refused,
      echoed, resetEnabled: afterReset.enabled,
    };
  },

  async latency(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "lat", listen: "127.0.0.1:0", upstream });
    const sock = await connect(portOf(proxy));  // live before the toxic
    const base = await medianRtt(sock);
    const toxic = await proxy.addToxic({ type: "latency", attributes: { latency: 200 } });
    const withToxic = await medianRtt(sock);
    await toxic.remove();
    const after = await medianRtt(sock);
    const never = await proxy.addToxic({ type: "latency", name: "never", toxicity: 0, attributes: { latency: 300 } });
    const sock2 = await connect(portOf(proxy));
    const zero = await medianRtt(sock2, 3);
    await never.remove();
    sock.destroy(); sock2.destroy();
    await proxy.remove();
    return { base, withToxic, after, zero };
  },

  async bandwidth(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "bw", listen: "127.0.0.1:0", upstream });
    await proxy.addToxic({ type: "bandwidth", attributes: { rate: 100 } });
    const sock = await connect(portOf(proxy));
    const start = Date.now();
    const reading = readAll(sock, start);
    sock.write("send 250000\n");
    const r = await reading;
    const bytes = r.chunks.reduce((n, c) => n + c.size, 0);
    await proxy.remove();
    // From the first byte to the last: the rate the toxic keeps.
    const span = r.chunks[r.chunks.length - 1].ms - r.firstMs;
    return { bytes, ms: span, bytesPerSecond: bytes / (span / 1000) };
  },

  async slicer(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "slice", listen: "127.0.0.1:0", upstream });
    await proxy.addToxic({ type: "slicer", attributes: { average_size: 100, size_variation: 20, delay: 50000 } });
    const sock = await connect(portOf(proxy));
    const reading = readAll(sock, Date.now());
    sock.write("send 2000\n");
    const r = await reading;
    await proxy.remove();
    return { sizes: r.chunks.map((c) => c.size), how: r.how };
  },

  async limit_data(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "limit", listen: "127.0.0.1:0", upstream });
    await proxy.addToxic({ type: "limit_data", attributes: { bytes: 1000 } });
    const sock = await connect(portOf(proxy));
    const reading = readAll(sock, Date.now());
    sock.write("send 5000\n");
    const r = await reading;
    await proxy.remove();
    return { bytes: r.chunks.reduce((n, c) => n + c.size, 0), how: r.how };
  },

  async timeout(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "to", listen: "127.0.0.1:0", upstream });
    const sock = await connect(portOf(proxy));
    await medianRtt(sock, 1);
    const hold = await proxy.addToxic({ type: "timeout", stream: "upstream", attributes: { timeout: 0 } });
    sock.write("lost\n");
    const heldBytes = await quietFor(sock, 500);
    await hold.remove();
    const afterRemove = (await roundTrip(sock, "found\n")).got;
    sock.destroy();
    await proxy.addToxic({ type: "timeout", name: "t300", attributes: { timeout: 300 } });
    const start = Date.now();
    const sock2 = await connect(portOf(proxy));
    const r = await readAll(sock2, start);
    await proxy.remove();
    return { heldBytes, afterRemove, closedAfterMs: r.ms, how: r.how };
  },

  async reset_peer(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "rst", listen: "127.0.0.1:0", upstream });
    await proxy.addToxic({ type: "reset_peer", attributes: { timeout: 200 } });
    const start = Date.now();
    const sock = await connect(portOf(proxy));
    const reading = readAll(sock, start);
    // As in toxiproxy, the clock starts at the first data in the toxic's
    // direction (the upstream's reply here): an idle connection stays up.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const sentMs = Date.now() - start;
    sock.write("send 10\n");
    const r = await reading;
    await proxy.remove();
    return { how: r.how, ms: r.ms, sentMs, bytes: r.chunks.reduce((n, c) => n + c.size, 0) };
  },

  async slow_close(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "slow", listen: "127.0.0.1:0", upstream });
    await proxy.addToxic({ type: "slow_close", attributes: { delay: 300 } });
    const sock = await connect(portOf(proxy));
    const start = Date.now();
    const reading = readAll(sock, start);
    sock.write("send 10\n");
    const r = await reading;
    await proxy.remove();
    return { how: r.how, dataMs: r.firstMs, endMs: r.ms };
  },

  async frames(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "frames", listen: "127.0.0.1:0", upstream });
    const results = {};
    const line = async (name, attributes, input, expect) => {
      const t = await proxy.addToxic({ type: "frame", stream: "upstream", attributes: { codec: "line", ...attributes } });
      results[name] = (await echoThrough(proxy, input, expect)).toString();
      await t.remove();
    };
    await line("drop2", { action: "drop", nth: 2 }, "a\nb\nc\n", 4);
    await line("dup1", { action: "duplicate", nth: 1 }, "a\nb\n", 6);
    await line("corruptMatch", { action: "corrupt", match: "secret" }, "plain\nsecret\n", 13);
    const delay = await proxy.addToxic({ type: "frame", stream: "upstream",
                                         attributes: { codec: "line", action: "delay", nth: 1, delay: 300 } });
    const sock = await connect(portOf(proxy));
    results.delayMs = (await roundTrip(sock, "slow\n")).ms;
    results.nextMs = (await roundTrip(sock, "fast\n")).ms;
    sock.destroy();
    await delay.remove();
    const t = await proxy.addToxic({ type: "frame", stream: "upstream", attributes: { codec: "length", action: "drop", nth: 2 } });
    const input = Buffer.concat([lengthFrame("one"), lengthFrame("two"), lengthFrame("three")]);
    results.length = (await echoThrough(proxy, input, 7 + 9)).toString("latin1");
    await t.remove();
    await proxy.remove();
    return results;
  },

  async cidr(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "cidr", listen: "127.0.0.1:0", upstream });
    const other = await proxy.addToxic({ type: "latency", name: "elsewhere", attributes: { latency: 300, clients: ["10.0.0.0/8"] } });
    const sock = await connect(portOf(proxy));
    const outside = await medianRtt(sock, 3);
    sock.destroy();
    await other.remove();
    await proxy.addToxic({ type: "latency", name: "here", attributes: { latency: 300, clients: ["127.0.0.0/8"] } });
    const sock2 = await connect(portOf(proxy));
    const inside = await medianRtt(sock2, 3);
    sock2.destroy();
    await proxy.remove();
    return { outside, inside };
  },

  async unplug(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "unplug", listen: "127.0.0.1:0", upstream });
    const bytes = await proxy.addToxic({ type: "unplug", attributes: { after_bytes: 1000, mode: "reset" } });
    const sock = await connect(portOf(proxy));
    const reading = readAll(sock, Date.now());
    sock.write("send 5000\n");
    const r = await reading;
    await bytes.remove();
    await proxy.addToxic({ type: "unplug", name: "timed", attributes: { after_ms: 300, mode: "close" } });
    const start = Date.now();
    const sock2 = await connect(portOf(proxy));
    const r2 = await readAll(sock2, start);
    await proxy.remove();
    return { bytes: r.chunks.reduce((n, c) => n + c.size, 0), how: r.how, timedHow: r2.how, timedMs: r2.ms };
  },

  // Which byte a corrupting frame toxic flips in each line comes from the
  // seeded generator; unlike slice sizes it does not depend on how reads
  // happen to coalesce, so it shows the schedule exactly.
  async seeded(upstream) {
    const proxy = await toxiproxy.createProxy({ name: "seeded", listen: "127.0.0.1:0", upstream });
    await proxy.addToxic({ type: "frame", stream: "upstream", attributes: { codec: "line", action: "corrupt" } });
    const input = ("a".repeat(32) + "\n").repeat(20);
    const got = (await echoThrough(proxy, input, input.length)).toString("latin1");
    await proxy.remove();
    return { text: got };
  },
};

(async () => {
  const server = await startUpstream();
  const upstream = `127.0.0.1:${server.address().port}`;
  try {
    const result = await scenarios[process.argv[2]](upstream);
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exitCode = 0;
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + "\n");
    process.exitCode = 1;
  } finally {
    server.close();
    setTimeout(() => process.exit(), 100).unref();
  }
})();
