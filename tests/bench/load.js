// The load the shared generator (../shared/bench-peer/status-load.js) does not make, signed the
// same way (HMAC-SHA1 of URL + sorted parameters, base64, in X-Twilio-Signature):
//   --kind msgstatus   message status callbacks for the MessageSids in --sids (sent, then delivered)
//   --kind mixed       status, msgstatus, sms and voice in turn (memory over many requests)
//   --rate R           open loop: R requests per second whatever the answers, latency counted from
//                      each request's scheduled time (no coordinated omission); else closed loop
//   --requests N       stop after N requests, or after --duration seconds if that comes first
//   --trace FILE       with --rate: each timed request's [epoch ms sent, latency ms], as JSON (tests/bench/steal.py)
// node load.js --base URL --token T [--sids FILE] [--msids FILE] [--to +E164] [--conns 32]
//   [--duration 10] [--warmup 2] [--kind ...] [--rate R] [--requests N] [--trace FILE]
// One JSON line out: requests, rps, p50_ms, p99_ms, codes.
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');

const arg = (k, d) => { const i = process.argv.indexOf('--' + k); return i > 0 ? process.argv[i + 1] : d; };
const base = arg('base'), token = arg('token'), to = arg('to', '+33123456789');
const conns = +arg('conns', 32), duration = +arg('duration', 10), warmup = +arg('warmup', 2);
const kind = arg('kind', 'msgstatus'), rate = +arg('rate', 0), maxRequests = +arg('requests', 0);
const account = 'AC' + 'a1'.repeat(16);
const lines = (f) => (f ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean) : []);
const sids = lines(arg('sids')), msids = lines(arg('msids'));
const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
const PATHS = { status: '/webhook/voice/status', msgstatus: '/webhook/status', sms: '/webhook/sms', voice: '/webhook/voice' };
const KINDS = ['status', 'msgstatus', 'sms', 'voice'];

function sign(path, params) {
  let s = base + path;
  for (const k of Object.keys(params).sort()) s += k + params[k];
  return crypto.createHmac('sha1', token).update(Buffer.from(s, 'utf8')).digest('base64');
}
const counters = { status: 0, msgstatus: 0, sms: 0, voice: 0 };
let n = 0;
function next() {
  const k = kind === 'mixed' ? KINDS[n++ % KINDS.length] : kind;
  const i = counters[k]++;
  const fresh = (p) => p + crypto.randomBytes(16).toString('hex');
  if (k === 'voice') {
    return [k, { AccountSid: account, CallSid: fresh('CA'), From: '+1415' + String(5000000 + (i % 90000)).padStart(7, '0'),
      To: to, CallStatus: 'ringing', Direction: 'inbound', ApiVersion: '2010-04-01' }];
  }
  if (k === 'sms') {
    return [k, { AccountSid: account, MessageSid: fresh('SM'), From: '+3368' + String(7000000 + (i % 5000)).padStart(7, '0'),
      To: to, Body: 'Bonjour, message de charge numero ' + i, NumMedia: '0', NumSegments: '1', ApiVersion: '2010-04-01' }];
  }
  if (k === 'msgstatus') {
    const sid = msids[i % msids.length];
    const st = ['sent', 'delivered'][Math.floor(i / msids.length) % 2];
    return [k, { AccountSid: account, MessageSid: sid, SmsSid: sid, MessageStatus: st, SmsStatus: st, From: to,
      To: '+14155550100', ApiVersion: '2010-04-01' }];
  }
  const sid = sids[i % sids.length];
  const st = ['ringing', 'in-progress', 'completed'][Math.floor(i / sids.length) % 3];
  const p = { AccountSid: account, CallSid: sid, CallStatus: st, From: '+14155550100', To: to, Direction: 'outbound-api',
    ApiVersion: '2010-04-01', SequenceNumber: String(Math.floor(i / sids.length)), CallbackSource: 'call-progress-events' };
  if (st === 'completed') p.CallDuration = '42';
  return [k, p];
}
function once(t0) {
  return new Promise((resolve) => {
    const [k, params] = next();
    const path = PATHS[k];
    const body = new URLSearchParams(params).toString();
    const url = new URL(base + path);
    const req = http.request({ host: url.hostname, port: url.port, path, method: 'POST', agent,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(body),
        'X-Twilio-Signature': sign(path, params) } },
    (res) => { res.resume(); res.on('end', () => resolve([res.statusCode, Number(process.hrtime.bigint() - t0) / 1e6])); });
    req.on('error', () => resolve([0, Number(process.hrtime.bigint() - t0) / 1e6]));
    req.end(body);
  });
}
async function closed(seconds, limit, record) {
  const end = Date.now() + seconds * 1000;
  const lat = [], codes = {};
  let sent = 0;
  await Promise.all(Array.from({ length: conns }, async () => {
    while ((!limit || sent < limit) && Date.now() < end) {
      sent++;
      const [code, ms] = await once(process.hrtime.bigint());
      if (record) { lat.push(ms); codes[code] = (codes[code] || 0) + 1; }
    }
  }));
  return { lat, codes };
}
const trace = [];
async function open(seconds, record) {
  // Each request leaves at its scheduled time, answered or not; its latency counts from then.
  const lat = [], codes = {}, pending = [];
  const start = process.hrtime.bigint(), step = 1e9 / rate, total = Math.round(seconds * rate);
  for (let i = 0; i < total; i++) {
    const due = start + BigInt(Math.round(i * step));
    const wait = Number(due - process.hrtime.bigint()) / 1e6;
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const sent = Date.now() - Number(process.hrtime.bigint() - due) / 1e6;  // its scheduled time, as its latency
    pending.push(once(due).then(([code, ms]) => {
      if (record) { lat.push(ms); trace.push([sent, ms]); codes[code] = (codes[code] || 0) + 1; }
    }));
  }
  await Promise.all(pending);
  return { lat, codes };
}
(async () => {
  const run = (secs, rec) => (rate ? open(secs, rec) : closed(secs, rec ? maxRequests : 0, rec));
  if (warmup > 0) await run(warmup, false);
  const t0 = Date.now();
  const { lat, codes } = await run(duration, true);
  const secs = (Date.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p) => (lat.length ? +lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2) : null);
  console.log(JSON.stringify({ requests: lat.length, rps: +(lat.length / secs).toFixed(1), p50_ms: q(0.5), p99_ms: q(0.99), codes }));
  if (arg('trace')) fs.writeFileSync(arg('trace'), JSON.stringify(trace));
  agent.destroy();
})();
