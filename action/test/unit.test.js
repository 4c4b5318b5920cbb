'use strict';
// The action's pieces on their own: no network, no tokenmint.

const assert = require('node:assert/strict');
const { test } = require('node:test');
const { Log, escapeData, escapeProperty, fileCommandEntry } = require('../lib/commands');
const { parseRetryAfter, retryDelayMs, MAX_WAIT_MS, USER_AGENT } = require('../lib/http');
const { scrub, decodePayloadUnverified } = require('../lib/jwt');
const { readInputs } = require('../lib/run');

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const JWT = `${b64({ alg: 'ES256', typ: 'JWT' })}.${b64({ repository: 'acme/app' })}.c2lnbmF0dXJlLWJ5dGVzLWhlcmU`;

test('Retry-After: delay-seconds, HTTP dates, and nonsense', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('1', now), 1000);
  assert.equal(parseRetryAfter(' 120 ', now), 120_000);
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now), 5000);
  assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter(null, now), null);
  assert.equal(parseRetryAfter('', now), null);
  assert.equal(parseRetryAfter('1.5', now), null);
  assert.equal(parseRetryAfter('-3', now), null);
  assert.equal(parseRetryAfter('soon', now), null);
});

test('backoff doubles with jitter, honours Retry-After, and is capped', () => {
  assert.equal(retryDelayMs(1, null, () => 0), 500);
  assert.equal(retryDelayMs(1, null, () => 1), 1000);
  assert.equal(retryDelayMs(3, null, () => 0), 2000);
  assert.equal(retryDelayMs(3, null, () => 1), 4000);
  assert.equal(retryDelayMs(10, null, () => 1), 30_000);
  assert.equal(retryDelayMs(1, 1000, () => 0), 1000, 'at least what Retry-After asks');
  assert.equal(retryDelayMs(1, 7000, () => 1), 7000);
  assert.equal(retryDelayMs(1, 3_600_000, () => 1), MAX_WAIT_MS, 'at most 60 s');
  assert.equal(MAX_WAIT_MS, 60_000);
});

test('the User-Agent names the action and the version in package.json', () => {
  assert.equal(USER_AGENT, `tokenmint-action/${require('../package.json').version}`);
});

test('workflow command escaping', () => {
  assert.equal(escapeData('100% done\r\nnext'), '100%25 done%0D%0Anext');
  assert.equal(escapeProperty('a: b, c%'), 'a%3A b%2C c%25');
});

test('file command entries use a fresh delimiter on both sides', () => {
  const entry = fileCommandEntry('token', 'line one\nline two');
  const m = /^token<<(ghadelimiter_[0-9a-f-]{36})\nline one\nline two\n\1\n$/.exec(entry);
  assert.ok(m, entry);
  assert.notEqual(fileCommandEntry('token', 'x'), fileCommandEntry('token', 'x'));
});

test('scrub removes token-shaped strings and keeps host names', () => {
  assert.equal(scrub(`bad token ${JWT} here`), 'bad token [token removed] here');
  assert.equal(scrub('eyJhbGciOi.eyJzdWIi.'), '[token removed]', 'an unsigned JWT too');
  assert.equal(
    scrub('aaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbb.cccccccccccccccccccccc'),
    '[token removed]',
    'three long base64url segments',
  );
  const text = 'https://token.actions.githubusercontent.com and api.internal.example failed';
  assert.equal(scrub(text), text);
});

test('scrub is linear on long runs of base64url characters', () => {
  const started = Date.now();
  for (const text of ['a'.repeat(1_000_000), 'eyJ'.repeat(300_000), `${'a'.repeat(20)}.`.repeat(50_000)]) scrub(text);
  assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);
  assert.equal(scrub(`x ${'a'.repeat(100_000)} y`), `x ${'a'.repeat(100_000)} y`);
  assert.equal(scrub(`see ${'a'.repeat(16)}.${'b'.repeat(16)}.${'c'.repeat(16)}, ok`), 'see [token removed], ok');
});

test('no line the log writes carries the v1 command prefix ##[', () => {
  const lines = [];
  const log = new Log((line) => lines.push(line));
  log.info('HTTP 503: ##[stop-commands]x and ###[y] and ##[##[z');
  log.info(`##${JWT}`, 'a placeholder does not complete one');
  log.debug('##[set-output name=a]b');
  log.error('##[error]x', '##[t]');
  assert.deepEqual(lines, [
    'HTTP 503: #\\x23[stop-commands]x and ##\\x23[y] and #\\x23[#\\x23[z\n',
    '#\\x23[token removed]\n',
    '::debug::#\\x23[set-output name=a]b\n',
    '::error title=#\\x23[t]::#\\x23[error]x\n',
  ]);
  assert.ok(lines.every((l) => !l.includes('##[')));
});

test('the log hides secrets in debug, info and error lines', () => {
  const lines = [];
  const log = new Log((line) => lines.push(line));
  log.hide('s3cret-request-token');
  log.mask(JWT);
  log.debug(`got ${JWT} with s3cret-request-token`);
  log.info(`value ${JWT.slice(0, -2)}`);
  log.error(`denied: ${JWT}\nline two`, 'title: x, y');
  log.info('from a server\n::warning::injected');
  assert.deepEqual(lines, [
    `::add-mask::${JWT}\n`,
    '::debug::got *** with ***\n',
    'value [token removed]\n',
    '::error title=title%3A x%2C y::denied: ***%0Aline two\n',
    'from a server\\x0a::warning::injected\n',
  ]);
});

test('decoding a payload does not verify and rejects what is not a JWS', () => {
  assert.deepEqual(decodePayloadUnverified(JWT), { repository: 'acme/app' });
  assert.equal(decodePayloadUnverified('not-a-token'), null);
  assert.equal(decodePayloadUnverified(`${b64({})}.${Buffer.from('[1]').toString('base64url')}.x`), null);
  assert.equal(decodePayloadUnverified('a.b.c.d'), null);
});

test('inputs: defaults, trailing slashes, and refusals', () => {
  const env = (inputs) => Object.fromEntries(Object.entries(inputs).map(([k, v]) => [`INPUT_${k.toUpperCase()}`, v]));
  assert.deepEqual(readInputs(env({ url: ' https://sts.example.com// ', audience: 'tenant-prod', retries: '3' })), {
    url: 'https://sts.example.com',
    audience: 'tenant-prod',
    scope: '',
    policy: '',
    oidcAudience: 'https://sts.example.com',
    exportEnv: null,
    retries: 3,
  });
  const ok = { url: 'https://sts.example.com', audience: 'tenant-prod' };
  assert.equal(readInputs(env({ ...ok, 'oidc-audience': 'sts' })).oidcAudience, 'sts');
  assert.equal(readInputs(env({ ...ok, 'export-env': '_Token9' })).exportEnv, '_Token9');
  assert.equal(readInputs(env({ ...ok, url: 'http://localhost:8080/' })).url, 'http://localhost:8080');
  // The URL used is the URL checked: the parsed origin and path.
  const parsed = readInputs(env({ ...ok, url: 'https://STS.example.com:443/base//' }));
  assert.equal(parsed.url, 'https://sts.example.com/base');
  assert.equal(parsed.oidcAudience, 'https://sts.example.com/base');
  const refused = [
    [{ audience: 'x' }, /^Input required and not supplied: url$/],
    [{ url: ok.url }, /^Input required and not supplied: audience$/],
    [{ ...ok, url: 'sts.example.com' }, /is not an absolute URL/],
    [{ ...ok, url: 'ftp://sts.example.com' }, /must be an https:\/\/ URL/],
    [{ ...ok, url: 'http://10.0.0.1' }, /http:\/\/ is allowed only to a loopback host/],
    [{ ...ok, url: 'https://sts.example.com/?x=1' }, /must not carry a query/],
    [{ ...ok, url: 'https://sts.example.com/?' }, /must not carry a query/],
    [{ ...ok, url: 'https://sts.example.com#' }, /must not carry a query/],
    [{ ...ok, url: 'https://sts.example.com/base#/x' }, /must not carry a query/],
    [{ ...ok, url: 'https://u:p@sts.example.com' }, /credentials/],
    [{ ...ok, 'export-env': 'A B' }, /is not a valid environment variable name/],
    [{ ...ok, 'export-env': 'GITHUB_TOKEN' }, /a name the runner does not let a step set/],
    [{ ...ok, 'export-env': 'node_options' }, /a name the runner does not let a step set/],
    [{ ...ok, retries: '11' }, /retries: "11" must be a whole number from 0 to 10/],
    [{ ...ok, retries: 'two' }, /retries/],
  ];
  for (const [inputs, message] of refused) {
    assert.throws(() => readInputs(env(inputs)), { message }, JSON.stringify(inputs));
  }
});
