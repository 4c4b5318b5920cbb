'use strict';
// The two HTTP calls, with retries: the runner's OIDC token endpoint, and tokenmint's
// RFC 8693 exchange. Node's built-in fetch only.

const { version } = require('../package.json');

const USER_AGENT = `tokenmint-action/${version}`;
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

/** The longest wait between two attempts, whatever Retry-After asks for. */
const MAX_WAIT_MS = 60_000;
/** The longest exponential backoff before Retry-After is considered. */
const MAX_BACKOFF_MS = 30_000;
/** How long one attempt may take. */
const ATTEMPT_TIMEOUT_MS = 30_000;
/** The largest answer read; a longer body is a failed answer (tokenmint's are a few KiB). */
const MAX_BODY_BYTES = 64 * 1024;
/** The longest server string (error, description, request id, body excerpt) printed. */
const MAX_TEXT = 1024;
/** What a CI or access token may contain; anything else could defeat the runner's mask. */
const TOKEN_CHARS = /^[A-Za-z0-9._~+\/=-]+$/;

/**
 * Retry-After in milliseconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3);
 * null when absent or unreadable. A date in the past is 0.
 */
function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined) return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  if (!/[A-Za-z]/.test(text)) return null; // "1.5", "-3": neither form
  const date = Date.parse(text);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - now);
}

/**
 * The wait before retry number `retry` (1 for the first retry): exponential backoff from
 * 1 s with equal jitter (half fixed, half random), at least what Retry-After asks, at most
 * MAX_WAIT_MS.
 */
function retryDelayMs(retry, retryAfterMs, random = Math.random) {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (retry - 1));
  const backoff = base / 2 + random() * (base / 2);
  return Math.min(MAX_WAIT_MS, Math.max(retryAfterMs ?? 0, backoff));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A one-line description of a fetch failure (no URL, no body). */
function describeNetworkError(err) {
  if (err && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return `no answer within ${ATTEMPT_TIMEOUT_MS / 1000} s`;
  }
  const cause = err && err.cause;
  const detail = cause && (cause.code || cause.message);
  return detail ? `${err.message} (${detail})` : String((err && err.message) || err);
}

/**
 * Runs `attempt` until it settles: it returns {ok: value}, {fail: info} or
 * {retry: info, retryAfterMs}. `retries` is how many times a retryable outcome is retried.
 * Resolves to {ok} or {fail, attempts}; a retryable outcome left when retries run out
 * becomes {fail} with `exhausted: true`.
 */
async function withRetries({ retries, what, log, attempt, random = Math.random }) {
  for (let n = 1; ; n++) {
    const outcome = await attempt(n);
    if ('ok' in outcome) return { ok: outcome.ok, attempts: n };
    if ('fail' in outcome) return { fail: outcome.fail, attempts: n };
    if (n > retries) return { fail: outcome.retry, attempts: n, exhausted: true };
    const failed =
      `${what}: attempt ${n} of ${retries + 1} failed: ${outcome.retry.summary}` +
      `${outcome.retry.request_id ? ` (request_id ${outcome.retry.request_id})` : ''}`;
    const asked = outcome.retryAfterMs ?? null;
    if (asked !== null && asked > MAX_WAIT_MS) {
      // As the sh and Rust clients do: waiting less than asked would go against the
      // service, and waiting longer would stall the job.
      log.info(
        `${failed}; the service asks to wait ${Math.ceil(asked / 1000)} s (Retry-After), ` +
          `more than ${MAX_WAIT_MS / 1000} s: giving up`,
      );
      return { fail: outcome.retry, attempts: n, exhausted: true };
    }
    const wait = retryDelayMs(n, asked, random);
    log.info(
      `${failed}; retrying in ${(wait / 1000).toFixed(1)} s${asked === null ? '' : ' (as Retry-After asks)'}`,
    );
    await sleep(wait);
  }
}

/**
 * The body as {text, json}, reading at most MAX_BODY_BYTES: a longer body is not read any
 * further and comes back as {text: '', json: null, tooLarge: true}.
 */
async function readJson(response) {
  const chunks = [];
  let size = 0;
  if (response.body) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_BODY_BYTES) {
        await reader.cancel().catch(() => {});
        return { text: '', json: null, tooLarge: true };
      }
      chunks.push(value);
    }
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return { text, json: JSON.parse(text) };
  } catch {
    return { text, json: null };
  }
}

/** At most MAX_TEXT characters of a server string, so that no line is unbounded. */
function bounded(text) {
  const value = String(text);
  return value.length > MAX_TEXT ? `${value.slice(0, MAX_TEXT)}…` : value;
}

const str = (value) => (typeof value === 'string' && value !== '' ? bounded(value) : null);

/** The body for a one-line summary: an excerpt, or what made it unreadable. */
function excerpt(body) {
  if (body.tooLarge) return `: a body over ${MAX_BODY_BYTES / 1024} KiB, not read`;
  return body.text ? `: ${body.text.slice(0, 300)}` : '';
}

/** True when `token` is non-empty and only [A-Za-z0-9._~+/=-]. */
const validToken = (token) => typeof token === 'string' && TOKEN_CHARS.test(token);

/**
 * Asks the runner for the job's OIDC token for `audience`. Calls `onToken(token)` as soon
 * as the token is read, before anything else happens with it (the caller masks it there).
 */
async function requestOidcToken({ requestUrl, requestToken, audience, retries, log, onToken }) {
  const url = `${requestUrl}${requestUrl.includes('?') ? '&' : '?'}audience=${encodeURIComponent(audience)}`;
  const result = await withRetries({
    retries,
    log,
    what: 'Requesting the OIDC token',
    attempt: async () => {
      let response;
      let body;
      try {
        response = await fetch(url, {
          headers: {
            Authorization: `Bearer ${requestToken}`,
            Accept: 'application/json',
            'User-Agent': USER_AGENT,
          },
          redirect: 'manual',
          signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
        });
        body = await readJson(response);
      } catch (err) {
        return { retry: { summary: describeNetworkError(err) } };
      }
      const value = response.status === 200 && body.json && body.json.value;
      if (validToken(value)) {
        onToken(value);
        return { ok: value };
      }
      // Never printed, nor masked: a value the mask could not cover.
      const summary =
        response.status !== 200
          ? `HTTP ${response.status}${excerpt(body)}`
          : typeof value === 'string' && value !== ''
            ? 'HTTP 200 with a token outside [A-Za-z0-9._~+/=-] in "value" (not shown)'
            : `HTTP 200 without a token in "value"${body.tooLarge ? excerpt(body) : ''}`;
      if (response.status === 429 || response.status >= 500) {
        return {
          retry: { summary },
          retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
        };
      }
      return { fail: { summary } };
    },
  });
  return result;
}

/**
 * POSTs the exchange to `endpoint`. Resolves to {ok: response JSON} or
 * {fail: {status, error, error_description, request_id, summary}, exhausted}.
 */
async function exchange({ endpoint, subjectToken, audience, scope, policy, retries, log, random }) {
  const form = new URLSearchParams();
  form.set('grant_type', TOKEN_EXCHANGE_GRANT);
  form.set('subject_token', subjectToken);
  form.set('subject_token_type', ID_TOKEN_TYPE);
  form.set('audience', audience);
  if (scope) form.set('scope', scope);
  if (policy) form.set('policy', policy);
  const payload = form.toString();

  return withRetries({
    retries,
    log,
    random,
    what: 'Exchanging the OIDC token',
    attempt: async (n) => {
      log.debug(`POST ${endpoint} (attempt ${n})`);
      let response;
      let body;
      try {
        // The same CI token is sent again on a retry: failed exchanges do not use it up.
        response = await fetch(endpoint, {
          method: 'POST',
          headers: {
            'Content-Type': 'application/x-www-form-urlencoded',
            Accept: 'application/json',
            'User-Agent': USER_AGENT,
          },
          body: payload,
          // Never follow a redirect: the CI token would go to wherever it points.
          redirect: 'manual',
          signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
        });
        body = await readJson(response);
      } catch (err) {
        return { retry: { status: null, summary: describeNetworkError(err) } };
      }
      const json = body.json && typeof body.json === 'object' ? body.json : {};
      const info = {
        status: response.status,
        error: str(json.error),
        error_description: str(json.error_description),
        request_id: str(json.request_id) || str(response.headers.get('x-request-id')),
      };
      if (response.status === 200) {
        if (validToken(json.access_token)) return { ok: json };
        if (typeof json.access_token === 'string' && json.access_token !== '') {
          // As the sh and Rust clients do: a token the runner's mask could not cover (a
          // newline, padding, a quote) is refused, and never printed.
          return {
            fail: { ...info, summary: 'HTTP 200 with an access_token outside [A-Za-z0-9._~+/=-]; not using it (not shown)' },
          };
        }
        return { fail: { ...info, summary: `HTTP 200 without an access_token${body.tooLarge ? excerpt(body) : ''}` } };
      }
      if (response.status >= 300 && response.status < 400) {
        const location = str(response.headers.get('location'));
        return {
          fail: {
            ...info,
            summary: `HTTP ${response.status} redirect${location ? ` to ${location}` : ''}, not followed; set url to the service's final address`,
          },
        };
      }
      info.summary = info.error
        ? `HTTP ${response.status} ${info.error}${info.error_description ? `: ${info.error_description}` : ''}`
        : `HTTP ${response.status}${excerpt(body)}`;
      if (response.status === 429 || response.status >= 500) {
        return { retry: info, retryAfterMs: parseRetryAfter(response.headers.get('retry-after')) };
      }
      return { fail: info };
    },
  });
}

module.exports = {
  USER_AGENT,
  MAX_WAIT_MS,
  MAX_BODY_BYTES,
  MAX_TEXT,
  parseRetryAfter,
  retryDelayMs,
  withRetries,
  requestOidcToken,
  exchange,
};
