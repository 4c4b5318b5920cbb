'use strict';
// End to end: action/main.js run as the runner runs it, against a fake runner OIDC
// endpoint and a real `tokenmint serve --dev` (TOKENMINT_BIN, default target/debug/tokenmint).

const assert = require('node:assert/strict');
const { after, before, describe, test } = require('node:test');
const h = require('../test-support/harness');

const CLAIMS = {
  repository: 'acme/app',
  ref: 'refs/heads/main',
  environment: 'production',
  workflow_ref: 'acme/app/.github/workflows/deploy.yml@refs/heads/main',
  run_id: '4242',
  run_attempt: '1',
};

const IDENTITY_HEADER =
  'The job, as its OIDC token names it (claims decoded here without verifying the signature; tokenmint verifies it):';
const IDENTITY = [
  IDENTITY_HEADER,
  '  repository: acme/app',
  '  ref: refs/heads/main',
  '  environment: production',
  '  workflow: acme/app/.github/workflows/deploy.yml@refs/heads/main',
  '  run: 4242 attempt 1',
];

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const nonDebug = (lines) => lines.filter((l) => !l.startsWith('::debug::'));

let tokenmint;
before(async () => {
  tokenmint = await h.startTokenmint();
});
after(async () => {
  if (tokenmint) await tokenmint.stop();
});

describe('the action', { concurrency: true }, () => {
  test('exchanges the OIDC token and writes the outputs and the env variable', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    t.after(oidc.close);
    const r = await h.runAction({
      // A trailing slash: stripped for {url}/token and for the default oidc-audience.
      inputs: { url: `${tokenmint.base}/`, audience: 'dev-api', 'export-env': 'DEV_API_TOKEN' },
      oidc,
    });
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0, r.stdout);

    assert.deepEqual(oidc.requests, [
      {
        method: 'GET',
        path: '/_apis/oidc/token',
        apiVersion: '2.0',
        audience: [tokenmint.base],
        authorization: `Bearer ${oidc.requestToken}`,
      },
    ]);
    assert.equal(oidc.tokens().length, 1);
    const [ciToken] = oidc.tokens();

    const outputs = h.parseFileCommands(r.output);
    const token = outputs[0][1];
    const requestId = outputs[4][1];
    assert.match(requestId, UUID);
    const sha = h.sha256(token);
    assert.deepEqual(outputs, [
      ['token', token],
      ['expires-in', '3600'],
      ['scope', 'read write'],
      ['policy', 'dev-any-repository'],
      ['request-id', requestId],
      ['token-sha256', sha],
    ]);
    assert.deepEqual(h.parseFileCommands(r.envFile), [['DEV_API_TOKEN', token]]);

    // The token is tokenmint's, for dev-api, naming this job.
    const claims = h.decodePayload(token);
    assert.equal(claims.iss, tokenmint.base);
    assert.equal(claims.aud, `${tokenmint.base}/dev-api`);
    assert.equal(claims.scope, 'read write');
    assert.equal(claims.ci.repository, 'acme/app');
    assert.equal(claims.ci.workflow_ref, CLAIMS.workflow_ref);
    assert.equal(claims.ci.run_id, '4242');

    assert.deepEqual(nonDebug(r.lines), [
      `::add-mask::${ciToken}`,
      ...IDENTITY,
      `::add-mask::${token}`,
      `Exchanged at ${tokenmint.base}/token (attempt 1 of 4):`,
      '  target: dev-api',
      '  scope: read write',
      '  policy: dev-any-repository',
      '  expires in: 3600 s',
      `  request id: ${requestId}`,
      `  token sha256: ${sha}`,
      '  exported to later steps as: DEV_API_TOKEN',
      `Find this exchange in the audit trail: tokenmint audit show ${requestId}`,
    ]);
    // Nothing about the token is printed before its mask.
    assert.ok(r.lines.slice(0, r.lines.indexOf(`::add-mask::${ciToken}`)).every((l) => l.startsWith('::debug::')));
  });

  test('masks the access token before writing it to GITHUB_OUTPUT or GITHUB_ENV', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    t.after(oidc.close);
    // stdout, GITHUB_OUTPUT and GITHUB_ENV all append to one file: its order is the order
    // of the writes.
    const r = await h.runAction({
      inputs: { url: tokenmint.base, audience: 'dev-api', 'export-env': 'DEV_API_TOKEN' },
      oidc,
      files: 'stdout',
      capture: false,
    });
    assert.equal(r.code, 0, r.stdout);
    const token = /^token<<(\S+)\n(.*)\n\1$/m.exec(r.stdout)[2];
    const lines = r.lines;
    const mask = lines.indexOf(`::add-mask::${token}`);
    assert.ok(mask >= 0, 'the access token is masked');
    const uses = lines.flatMap((l, i) => (l.includes(token) ? [i] : []));
    assert.deepEqual(uses.length, 3, 'the mask, the token output, the env variable');
    assert.equal(uses[0], mask, 'the mask comes first');
    assert.match(lines[uses[1] - 1], /^token<<ghadelimiter_/);
    assert.match(lines[uses[2] - 1], /^DEV_API_TOKEN<<ghadelimiter_/);
  });

  test('fails with the service answer on a denial', async (t) => {
    // No repository claim: the built-in dev policy does not match.
    const { repository, ...claims } = CLAIMS;
    const oidc = await h.startOidc(tokenmint.base, claims);
    const proxy = await h.startProxy(tokenmint.base);
    t.after(oidc.close);
    t.after(proxy.close);
    const r = await h.runAction({
      inputs: { url: proxy.base, 'oidc-audience': tokenmint.base, audience: 'dev-api' },
      oidc,
    });
    assert.equal(r.stderr, '');
    assert.equal(r.code, 1);
    assert.equal(proxy.requests.length, 1, 'a denial is not retried');
    const answer = proxy.requests[0].response;
    assert.equal(answer.status, 403);
    assert.equal(answer.json.error, 'access_denied');
    assert.equal(answer.json.error_description, 'no trust policy for target "dev-api" matches this workload');
    assert.match(answer.json.request_id, UUID);
    assert.deepEqual(nonDebug(r.lines), [
      `::add-mask::${oidc.tokens()[0]}`,
      IDENTITY_HEADER,
      '  repository: (not in the token)',
      ...IDENTITY.slice(2),
      '::error title=tokenmint denied the exchange::access_denied: ' +
        `no trust policy for target "dev-api" matches this workload (HTTP 403, request_id ${answer.json.request_id})`,
      `The decision is in the audit trail: tokenmint audit show ${answer.json.request_id}`,
    ]);
    assert.equal(r.output, '', 'no outputs');
    assert.equal(r.envFile, '');
  });

  test('passes scope and policy and fails on a scope no policy grants', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const proxy = await h.startProxy(tokenmint.base);
    t.after(oidc.close);
    t.after(proxy.close);
    const r = await h.runAction({
      inputs: {
        url: proxy.base,
        'oidc-audience': tokenmint.base,
        audience: 'dev-api',
        scope: 'read admin',
        policy: 'dev-any-repository',
      },
      oidc,
    });
    assert.equal(r.code, 1);
    const form = new URLSearchParams(proxy.requests[0].body);
    assert.equal(form.get('scope'), 'read admin');
    assert.equal(form.get('policy'), 'dev-any-repository');
    const { json } = proxy.requests[0].response;
    assert.deepEqual(Object.keys(json).sort(), ['error', 'error_description', 'request_id']);
    assert.equal(json.error, 'invalid_scope');
    assert.equal(json.error_description, 'the requested scope exceeds every matching policy');
    assert.deepEqual(nonDebug(r.lines).slice(-2), [
      '::error title=tokenmint denied the exchange::invalid_scope: the requested scope exceeds every matching policy ' +
        `(HTTP 400, request_id ${json.request_id})`,
      `The decision is in the audit trail: tokenmint audit show ${json.request_id}`,
    ]);
  });

  test('retries after a 503 with Retry-After, with the same CI token', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const proxy = await h.startProxy(tokenmint.base, { failFirst: 1 });
    t.after(oidc.close);
    t.after(proxy.close);
    const r = await h.runAction({
      inputs: {
        url: proxy.base,
        'oidc-audience': tokenmint.base,
        audience: 'dev-api',
        scope: 'read',
        policy: 'dev-any-repository',
      },
      oidc,
    });
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0, r.stdout);
    assert.equal(oidc.requests.length, 1, 'one OIDC token for both attempts');
    assert.deepEqual(
      proxy.requests.map((q) => [q.method, q.path, q.response.status]),
      [
        ['POST', '/token', 503],
        ['POST', '/token', 200],
      ],
    );
    const gap = proxy.requests[1].at - proxy.requests[0].at;
    assert.ok(gap >= 990 && gap < 5000, `waited ${gap} ms for Retry-After: 1`);
    const ciToken = new URLSearchParams(proxy.requests[0].body).get('subject_token');
    for (const q of proxy.requests) {
      assert.deepEqual([...new URLSearchParams(q.body)], [
        ['grant_type', 'urn:ietf:params:oauth:grant-type:token-exchange'],
        ['subject_token', ciToken],
        ['subject_token_type', 'urn:ietf:params:oauth:token-type:id_token'],
        ['audience', 'dev-api'],
        ['scope', 'read'],
        ['policy', 'dev-any-repository'],
      ]);
      assert.equal(q.headers['content-type'], 'application/x-www-form-urlencoded');
      assert.equal(q.headers['user-agent'], `tokenmint-action/${h.VERSION}`);
    }
    const answer = proxy.requests[1].response.json;
    const outputs = h.parseFileCommands(r.output);
    assert.deepEqual(outputs, [
      ['token', answer.access_token],
      ['expires-in', '3600'],
      ['scope', 'read'],
      ['policy', 'dev-any-repository'],
      ['request-id', answer.request_id],
      ['token-sha256', h.sha256(answer.access_token)],
    ]);
    assert.equal(r.envFile, '', 'export-env is empty by default');
    const lines = nonDebug(r.lines);
    assert.deepEqual(lines.slice(0, 8), [
      `::add-mask::${ciToken}`,
      ...IDENTITY,
      'Exchanging the OIDC token: attempt 1 of 4 failed: HTTP 503 temporarily_unavailable: test proxy: try again ' +
        '(request_id proxy-1); retrying in 1.0 s (as Retry-After asks)',
    ]);
    assert.equal(lines[9], `Exchanged at ${proxy.base}/token (attempt 2 of 4):`);
  });

  test('gives up when the retries run out', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const proxy = await h.startProxy(tokenmint.base, { failFirst: Infinity });
    t.after(oidc.close);
    t.after(proxy.close);
    const r = await h.runAction({
      inputs: { url: proxy.base, 'oidc-audience': tokenmint.base, audience: 'dev-api', retries: '1' },
      oidc,
    });
    assert.equal(r.code, 1);
    assert.equal(proxy.requests.length, 2);
    assert.deepEqual(nonDebug(r.lines).slice(-2), [
      'Exchanging the OIDC token: attempt 1 of 2 failed: HTTP 503 temporarily_unavailable: test proxy: try again ' +
        '(request_id proxy-1); retrying in 1.0 s (as Retry-After asks)',
      '::error title=tokenmint exchange failed::gave up after 2 attempts: temporarily_unavailable: test proxy: ' +
        'try again (HTTP 503, request_id proxy-2)',
    ]);
    assert.equal(r.output, '');
  });

  test('retries network errors', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const dropper = await h.startDropper();
    t.after(oidc.close);
    t.after(dropper.close);
    const r = await h.runAction({
      inputs: { url: dropper.base, 'oidc-audience': tokenmint.base, audience: 'dev-api', retries: '1' },
      oidc,
    });
    assert.equal(r.code, 1);
    assert.equal(dropper.connections(), 2);
    const lines = nonDebug(r.lines);
    assert.match(lines.at(-2), /^Exchanging the OIDC token: attempt 1 of 2 failed: fetch failed \(\S+\); retrying in (0\.[5-9]|1\.0) s$/);
    assert.match(lines.at(-1), /^::error title=tokenmint exchange failed::gave up after 2 attempts: fetch failed \(\S+\)$/);
  });

  test('fails at once without the id-token permission', async (t) => {
    const proxy = await h.startProxy(tokenmint.base);
    t.after(proxy.close);
    const r = await h.runAction({ inputs: { url: proxy.base, audience: 'dev-api' }, oidc: null });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, '');
    assert.deepEqual(r.lines, [
      '::error title=tokenmint%3A no OIDC token::This job cannot request an OIDC token: ' +
        'ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set. ' +
        'Give the job `permissions: id-token: write` (a job that sets permissions gets only those it lists). ' +
        'Pull requests from forks get no OIDC token, whatever the workflow asks for.',
    ]);
    assert.equal(proxy.requests.length, 0, 'no network call');
    assert.equal(r.output, '');
  });

  test('fails when the runner refuses the OIDC token request', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const proxy = await h.startProxy(tokenmint.base);
    t.after(oidc.close);
    t.after(proxy.close);
    const wrong = { ...oidc, requestToken: 'not-the-request-token' };
    const r = await h.runAction({ inputs: { url: proxy.base, audience: 'dev-api' }, oidc: wrong });
    assert.equal(r.code, 1);
    assert.deepEqual(nonDebug(r.lines), [
      `::error title=tokenmint%3A no OIDC token::The runner issued no OIDC token for audience ${proxy.base}: ` +
        'HTTP 401: {"message":"bad request token"}',
    ]);
    assert.equal(oidc.requests.length, 1, 'a 401 is not retried');
    assert.equal(proxy.requests.length, 0, 'no exchange');
  });

  for (const name of ['1BAD', 'A-B']) {
    test(`refuses export-env ${name} before any network call`, async (t) => {
      const oidc = await h.startOidc(tokenmint.base, CLAIMS);
      const proxy = await h.startProxy(tokenmint.base);
      t.after(oidc.close);
      t.after(proxy.close);
      const r = await h.runAction({ inputs: { url: proxy.base, audience: 'dev-api', 'export-env': name }, oidc });
      assert.equal(r.code, 1);
      assert.deepEqual(r.lines, [
        `::error title=tokenmint::export-env: "${name}" is not a valid environment variable name ` +
          '(expected [A-Za-z_][A-Za-z0-9_]*)',
      ]);
      assert.equal(oidc.requests.length, 0, 'no OIDC request');
      assert.equal(proxy.requests.length, 0, 'no exchange');
      assert.equal(r.output, '');
      assert.equal(r.envFile, '');
    });
  }

  // Review finding 1: the runner finds the v1 command `##[...]` anywhere in a line, and
  // `##[stop-commands]` would leave the later `::add-mask::` line unprocessed, in clear.
  for (const [kind, first] of [
    [
      'JSON error',
      {
        status: 503,
        headers: { 'retry-after': '1', 'x-request-id': '##[stop-commands]y' },
        body: { error: 'temporarily_unavailable', error_description: '##[stop-commands]x' },
      },
    ],
    ['HTML page', { status: 502, headers: { 'content-type': 'text/html' }, body: '<html>###[stop-commands]x</html>' }],
  ]) {
    test(`server text (${kind}) cannot carry a ##[ workflow command`, async (t) => {
      const oidc = await h.startOidc(tokenmint.base, CLAIMS);
      const access = `at-${h.sha256(kind)}`;
      const fake = await h.startScripted([first, { status: 200, body: { access_token: access, request_id: '##[x]' } }]);
      t.after(oidc.close);
      t.after(fake.close);
      const r = await h.runAction({ inputs: { url: fake.base, audience: 'dev-api' }, oidc });
      assert.equal(r.code, 0, r.stdout);
      assert.equal(fake.requests.length, 2);
      const retry = r.lines.find((l) => l.includes('attempt 1 of 4 failed'));
      assert.ok(retry && retry.includes('[stop-commands]x'), `the server's text is still shown: ${retry}`);
      assert.ok(!r.stdout.includes('##['), 'no line carries ##[');
      assert.ok(!r.stderr.includes('##['));
      assert.ok(r.lines.includes(`::add-mask::${access}`), 'the access token is masked');
    });
  }

  // Review finding 3: a token the mask cannot cover is refused, and never printed.
  for (const [kind, access] of [
    ['a newline', "line-one-secret\nline-two-secret'$(id)"],
    ['a trailing space', 'padded-secret '],
  ]) {
    test(`refuses an access token with ${kind}, without printing it`, async (t) => {
      const oidc = await h.startOidc(tokenmint.base, CLAIMS);
      const fake = await h.startScripted([{ status: 200, body: { access_token: access } }]);
      h.secrets.delete(access);
      t.after(oidc.close);
      t.after(fake.close);
      const r = await h.runAction({ inputs: { url: fake.base, audience: 'dev-api', 'export-env': 'T' }, oidc });
      assert.equal(r.code, 1);
      assert.equal(fake.requests.length, 1, 'not retried');
      assert.ok(!r.stdout.includes('secret'), 'the token is not printed');
      assert.equal(r.lines.filter((l) => l.startsWith('::add-mask::')).length, 1, 'only the CI token is masked');
      assert.match(r.lines.at(-1), /^::error title=tokenmint denied the exchange::HTTP 200 with an access_token outside /);
      assert.equal(r.output, '');
      assert.equal(r.envFile, '');
    });
  }

  test("refuses the runner's OIDC token with a newline, without printing it", async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS, { value: 'oidc-secret\nsecond-line' });
    const fake = await h.startScripted([{ status: 200, body: { access_token: 'never' } }]);
    t.after(oidc.close);
    t.after(fake.close);
    const r = await h.runAction({ inputs: { url: fake.base, audience: 'dev-api' }, oidc });
    assert.equal(r.code, 1);
    assert.ok(!r.stdout.includes('oidc-secret'));
    assert.deepEqual(nonDebug(r.lines), [
      `::error title=tokenmint%3A no OIDC token::The runner issued no OIDC token for audience ${fake.base}: ` +
        'HTTP 200 with a token outside [A-Za-z0-9._~+/=-] in "value" (not shown)',
    ]);
    assert.equal(fake.requests.length, 0, 'no exchange');
  });

  // Review finding 5: a Retry-After over 60 s ends the retries, as in the other clients.
  test('gives up at once when Retry-After asks for more than 60 s', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const fake = await h.startScripted([
      { status: 503, headers: { 'retry-after': '120' }, body: { error: 'temporarily_unavailable', request_id: 'f-1' } },
      { status: 200, body: { access_token: 'never' } },
    ]);
    t.after(oidc.close);
    t.after(fake.close);
    const started = Date.now();
    const r = await h.runAction({ inputs: { url: fake.base, audience: 'dev-api' }, oidc });
    assert.equal(r.code, 1);
    assert.ok(Date.now() - started < 10_000, 'it did not wait');
    assert.equal(fake.requests.length, 1);
    assert.deepEqual(nonDebug(r.lines).slice(-2), [
      'Exchanging the OIDC token: attempt 1 of 4 failed: HTTP 503 temporarily_unavailable (request_id f-1); ' +
        'the service asks to wait 120 s (Retry-After), more than 60 s: giving up',
      '::error title=tokenmint exchange failed::gave up after 1 attempts: temporarily_unavailable: (no description) ' +
        '(HTTP 503, request_id f-1)',
    ]);
  });

  // Review finding 9: bodies over 64 KiB are not read, and server text is bounded.
  for (const [kind, step] of [
    ['with a Content-Length', { status: 200, body: { access_token: 'big', pad: 'x'.repeat(70_000) } }],
    ['chunked', { status: 200, chunks: ['{"pad":"' + 'x'.repeat(1000), 10_000] }],
  ]) {
    test(`a 200 over 64 KiB (${kind}) is a failure`, async (t) => {
      const oidc = await h.startOidc(tokenmint.base, CLAIMS);
      const fake = await h.startScripted([step]);
      t.after(oidc.close);
      t.after(fake.close);
      const r = await h.runAction({ inputs: { url: fake.base, audience: 'dev-api' }, oidc });
      assert.equal(r.code, 1);
      assert.equal(r.lines.at(-1), '::error title=tokenmint denied the exchange::HTTP 200 without an access_token: a body over 64 KiB, not read');
      assert.equal(r.output, '');
    });
  }

  test('a long error_description is cut, and a long base64url run is scrubbed quickly', async (t) => {
    const oidc = await h.startOidc(tokenmint.base, CLAIMS);
    const fake = await h.startScripted([
      { status: 400, body: { error: 'invalid_request', error_description: 'A'.repeat(60_000) } },
    ]);
    t.after(oidc.close);
    t.after(fake.close);
    const started = Date.now();
    const r = await h.runAction({ inputs: { url: fake.base, audience: 'dev-api' }, oidc });
    assert.equal(r.code, 1);
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    const error = r.lines.at(-1);
    assert.ok(error.includes(`${'A'.repeat(1024)}…`) && !error.includes('A'.repeat(1025)), 'cut at 1 KiB');
  });

  test('refuses plain http to a host that is not loopback', async () => {
    const r = await h.runAction({ inputs: { url: 'http://sts.example.com', audience: 'dev-api' }, oidc: null });
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, [
      '::error title=tokenmint::url: "http://sts.example.com": http:// is allowed only to a loopback host; ' +
        'anywhere else the OIDC token and the access token would cross the network in the clear',
    ]);
  });
});

test('no token appears unmasked in any captured output', () => {
  const tokens = [...h.secrets];
  // Every CI token of the runs that got one, and the access tokens of the successes.
  assert.ok(tokens.length >= 9, `the check saw ${tokens.length} tokens`);
  assert.ok(h.captures.length >= 10, `the check saw ${h.captures.length} runs`);
  let masks = 0;
  for (const { name, stdout, stderr } of h.captures) {
    for (const [stream, text] of [
      ['stdout', stdout],
      ['stderr', stderr],
    ]) {
      for (const secret of h.requestTokens) {
        assert.ok(!text.includes(secret), `${name}: ${stream} shows the runner's request token`);
      }
      for (const line of text.split('\n')) {
        if (stream === 'stdout' && line.startsWith('::add-mask::')) {
          assert.ok(tokens.includes(line.slice('::add-mask::'.length)), `${name}: an unknown value is masked`);
          masks++;
          continue;
        }
        for (const token of tokens) {
          assert.ok(!line.includes(token), `${name}: ${stream} shows a token unmasked: ${line.slice(0, 80)}`);
        }
        assert.doesNotMatch(line, /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\./, `${name}: ${stream} shows a JWT`);
      }
    }
  }
  assert.ok(masks >= 8, `the check saw ${masks} masks`);
});
