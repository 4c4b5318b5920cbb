'use strict';
// Test harness: runs action/main.js as the runner does, against a fake runner OIDC
// endpoint, a real `tokenmint serve --dev`, and optional proxies in front of it.
// Kept out of action/test/ because node --test runs every .js file under a test/ directory.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ACTION_DIR = path.resolve(__dirname, '..');
const REPO = path.resolve(ACTION_DIR, '..');
const MAIN = path.join(ACTION_DIR, 'main.js');
const VERSION = require('../package.json').version;

/** Every secret a test saw (CI tokens, access tokens), for the leak check. */
const secrets = new Set();
/** Runner request tokens: these must not appear in the output at all. */
const requestTokens = new Set();
/** Every captured stdout/stderr of the action, for the leak check. */
const captures = [];

/**
 * The inputs' defaults declared in action.yml. A line parser for this one file: input names
 * at two spaces under `inputs:`, `default: "..."` at four (JSON-quoted strings only).
 */
function actionDefaults() {
  const lines = fs.readFileSync(path.join(REPO, 'action.yml'), 'utf8').split('\n');
  const defaults = {};
  let inInputs = false;
  let current = null;
  for (const line of lines) {
    if (/^\S/.test(line)) {
      inInputs = line === 'inputs:';
      current = null;
      continue;
    }
    if (!inInputs) continue;
    const name = /^ {2}([A-Za-z0-9_-]+):\s*$/.exec(line);
    if (name) {
      current = name[1];
      continue;
    }
    const dflt = /^ {4}default:\s*(.*)$/.exec(line);
    if (dflt && current) {
      assert.match(dflt[1], /^".*"$/, `action.yml: the default of ${current} must be a double-quoted string`);
      defaults[current] = JSON.parse(dflt[1]);
    }
  }
  return defaults;
}

function tokenmintBin() {
  const bin = path.resolve(process.env.TOKENMINT_BIN || path.join(REPO, 'target', 'debug', 'tokenmint'));
  if (!fs.existsSync(bin)) {
    throw new Error(
      `the tokenmint binary is missing at ${bin}: build it with \`cargo build --locked\` in ${REPO}, ` +
        'or point TOKENMINT_BIN at one',
    );
  }
  return bin;
}

/** Starts `tokenmint serve --dev` on a free loopback port; resolves to {base, stop, log}. */
async function startTokenmint() {
  const bin = tokenmintBin();
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'tokenmint-action-serve-')); // no ./policies
  const child = spawn(bin, ['serve', '--dev', '--listen', '127.0.0.1:0'], {
    cwd,
    env: { PATH: process.env.PATH, RUST_LOG: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tokenmint did not start within 20 s:\n${log}`)), 20_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /tokenmint is serving listen=(127\.0\.0\.1:\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tokenmint exited with ${code} before serving:\n${log}`));
    });
  });
  return {
    base,
    log: () => log,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => {
          fs.rmSync(cwd, { recursive: true, force: true });
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

function close(server) {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * A fake runner OIDC endpoint: answers GET /_apis/oidc/token?api-version=2.0&audience=A
 * (bearer `requestToken`) with {"value": token}, the token minted by tokenmint's dev CI
 * issuer from `claims` with `aud` = A.
 */
async function startOidc(tokenmintBase, claims, { value } = {}) {
  const requestToken = `runner-request-${crypto.randomUUID()}`;
  requestTokens.add(requestToken);
  const requests = [];
  const minted = [];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://runner');
    requests.push({
      method: req.method,
      path: url.pathname,
      apiVersion: url.searchParams.get('api-version'),
      audience: url.searchParams.getAll('audience'),
      authorization: req.headers.authorization,
    });
    if (req.headers.authorization !== `Bearer ${requestToken}` || url.pathname !== '/_apis/oidc/token') {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"bad request token"}');
      return;
    }
    const answer = await fetch(`${tokenmintBase}/dev/ci-token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...claims, aud: url.searchParams.get('audience') }),
    });
    const { token } = await answer.json();
    // `value`: what the runner answers instead of the token (a test of odd answers).
    const answered = value === undefined ? token : value;
    if (value === undefined) {
      secrets.add(token);
      minted.push(token);
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: 1, value: answered }));
  });
  const base = await listen(server);
  return {
    requestUrl: `${base}/_apis/oidc/token?api-version=2.0`,
    requestToken,
    requests,
    tokens: () => [...minted],
    close: () => close(server),
  };
}

/**
 * A recording proxy in front of `target`. The first `failFirst` POSTs to /token get a 503
 * with `Retry-After: 1` (request ids proxy-1, proxy-2, ...); the rest are forwarded.
 */
async function startProxy(target, { failFirst = 0 } = {}) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    const record = { at: Date.now(), method: req.method, path: req.url, headers: req.headers, body, response: null };
    requests.push(record);
    if (req.method === 'POST' && req.url === '/token' && requests.length <= failFirst) {
      const answer = {
        error: 'temporarily_unavailable',
        error_description: 'test proxy: try again',
        request_id: `proxy-${requests.length}`,
      };
      record.response = { status: 503, json: answer };
      res
        .writeHead(503, { 'content-type': 'application/json', 'retry-after': '1', 'x-request-id': answer.request_id })
        .end(JSON.stringify(answer));
      return;
    }
    const upstream = await fetch(`${target}${req.url}`, {
      method: req.method,
      headers: {
        'content-type': req.headers['content-type'] || 'application/octet-stream',
        'user-agent': req.headers['user-agent'] || '',
      },
      body: req.method === 'GET' ? undefined : body,
    });
    const text = await upstream.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {}
    if (json && typeof json.access_token === 'string') secrets.add(json.access_token);
    record.response = { status: upstream.status, json };
    const headers = { 'content-type': upstream.headers.get('content-type') || 'text/plain' };
    for (const name of ['x-request-id', 'retry-after', 'cache-control']) {
      if (upstream.headers.get(name)) headers[name] = upstream.headers.get(name);
    }
    res.writeHead(upstream.status, headers).end(text);
  });
  const base = await listen(server);
  return { base, requests, close: () => close(server) };
}

/**
 * A scripted service: each POST gets the next step (the last one repeats), a step being
 * {status, headers, body} (body a string, or an object sent as JSON), or {status, headers,
 * chunks: [string, count]} for a chunked body of `count` copies of the string, sent without
 * a Content-Length. An access_token in a JSON body counts as a secret for the leak check.
 */
async function startScripted(steps) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const body = await readBody(req);
    requests.push({ at: Date.now(), method: req.method, path: req.url, body });
    const step = steps[Math.min(requests.length, steps.length) - 1];
    const headers = { 'content-type': 'application/json', ...(step.headers || {}) };
    if (step.chunks) {
      const [chunk, count] = step.chunks;
      res.writeHead(step.status, headers);
      let sent = 0;
      const more = () => {
        while (sent < count) {
          sent++;
          if (!res.write(chunk)) return res.once('drain', more);
        }
        res.end();
      };
      res.on('error', () => {});
      more();
      return;
    }
    const text = typeof step.body === 'string' ? step.body : JSON.stringify(step.body ?? {});
    if (step.body && typeof step.body.access_token === 'string') secrets.add(step.body.access_token);
    res.writeHead(step.status, headers).end(text);
  });
  const base = await listen(server);
  return { base, requests, close: () => close(server) };
}

/** A server that accepts connections and drops them at once: a network error per attempt. */
async function startDropper() {
  let connections = 0;
  const server = http.createServer();
  server.on('connection', (socket) => {
    connections++;
    socket.destroy();
  });
  const base = await listen(server);
  return { base, connections: () => connections, close: () => close(server) };
}

/**
 * Runs the action's entry point as the runner does: INPUT_<NAME> for every declared input
 * (defaults from action.yml, then `inputs`), GITHUB_OUTPUT and GITHUB_ENV as fresh files,
 * and the OIDC request variables of `oidc` unless it is null. `files: 'stdout'` points
 * GITHUB_OUTPUT and GITHUB_ENV at the file that also receives stdout, to see the order
 * of writes. Resolves to {code, stdout, stderr, output, envFile, lines}.
 */
async function runAction({ inputs = {}, oidc = null, files = 'separate', capture = true } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tokenmint-action-run-'));
  const env = { PATH: process.env.PATH, RUNNER_TEMP: dir };
  for (const [name, value] of Object.entries({ ...actionDefaults(), ...inputs })) {
    env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] = value;
  }
  const outputFile = path.join(dir, 'github_output');
  const envFile = path.join(dir, 'github_env');
  const stdoutFile = path.join(dir, 'stdout');
  fs.writeFileSync(stdoutFile, '');
  if (files === 'stdout') {
    env.GITHUB_OUTPUT = stdoutFile;
    env.GITHUB_ENV = stdoutFile;
  } else {
    fs.writeFileSync(outputFile, '');
    fs.writeFileSync(envFile, '');
    env.GITHUB_OUTPUT = outputFile;
    env.GITHUB_ENV = envFile;
  }
  if (oidc) {
    env.ACTIONS_ID_TOKEN_REQUEST_URL = oidc.requestUrl;
    env.ACTIONS_ID_TOKEN_REQUEST_TOKEN = oidc.requestToken;
  }
  const stdoutFd = fs.openSync(stdoutFile, 'a');
  const child = spawn(process.execPath, [MAIN], { cwd: dir, env, stdio: ['ignore', stdoutFd, 'pipe'] });
  fs.closeSync(stdoutFd);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const code = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('the action did not finish within 30 s'));
    }, 30_000);
    child.on('close', (exitCode) => {
      clearTimeout(timer);
      resolve(exitCode);
    });
  });
  const stdout = fs.readFileSync(stdoutFile, 'utf8');
  const result = {
    code,
    stdout,
    stderr,
    lines: stdout.split('\n').filter((l, i, all) => l !== '' || i < all.length - 1),
    output: files === 'stdout' ? null : fs.readFileSync(outputFile, 'utf8'),
    envFile: files === 'stdout' ? null : fs.readFileSync(envFile, 'utf8'),
  };
  if (result.output) {
    const m = /^token<<(\S+)\n(.*)\n\1\n/m.exec(result.output);
    if (m) secrets.add(m[2]);
  }
  if (capture) captures.push({ name: JSON.stringify(inputs), stdout, stderr });
  fs.rmSync(dir, { recursive: true, force: true });
  return result;
}

/**
 * Splits a GITHUB_OUTPUT / GITHUB_ENV text into [name, value] pairs, asserting the
 * `name<<DELIMITER` syntax with distinct random delimiters and nothing else in the file.
 */
function parseFileCommands(text) {
  const entries = [];
  const delimiters = new Set();
  const re = /([^\n]*)<<([^\n]*)\n/y;
  let at = 0;
  while (at < text.length) {
    re.lastIndex = at;
    const head = re.exec(text);
    assert.ok(head, `not a name<<DELIMITER line at ${JSON.stringify(text.slice(at, at + 40))}`);
    const [, name, delimiter] = head;
    assert.match(delimiter, /^ghadelimiter_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.ok(!delimiters.has(delimiter), 'a delimiter was used twice');
    delimiters.add(delimiter);
    const end = text.indexOf(`\n${delimiter}\n`, re.lastIndex);
    assert.ok(end >= 0, `no closing delimiter for ${name}`);
    const value = text.slice(re.lastIndex, end);
    assert.ok(!value.includes(delimiter));
    entries.push([name, value]);
    at = end + delimiter.length + 2;
  }
  return entries;
}

function sha256(text) {
  return crypto.createHash('sha256').update(text, 'utf8').digest('hex');
}

function decodePayload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

module.exports = {
  VERSION,
  secrets,
  requestTokens,
  captures,
  actionDefaults,
  startTokenmint,
  startOidc,
  startProxy,
  startDropper,
  startScripted,
  runAction,
  parseFileCommands,
  sha256,
  decodePayload,
};
