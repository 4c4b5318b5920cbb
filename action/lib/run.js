'use strict';
// The action's steps: read and check the inputs, get the job's OIDC token, exchange it at
// tokenmint, hand the access token to later steps, and say in the log what happened.

const crypto = require('node:crypto');
const { Log, appendFileCommand, showControls } = require('./commands');
const { decodePayloadUnverified } = require('./jwt');
const { requestOidcToken, exchange } = require('./http');

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_RETRIES = 10;
const AUDITED_DENIALS = new Set(['invalid_grant', 'invalid_target', 'access_denied', 'invalid_scope']);

/** A failure the action reports as one `::error::` line. */
class ActionError extends Error {
  constructor(message, title = 'tokenmint') {
    super(message);
    this.title = title;
  }
}

/** An input as the runner passes it: INPUT_<NAME> (spaces to `_`, upper case, hyphens kept). */
function getInput(env, name) {
  return (env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '').trim();
}

function requireInput(env, name) {
  const value = getInput(env, name);
  if (!value) throw new ActionError(`Input required and not supplied: ${name}`);
  return value;
}

function isLoopback(hostname) {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * The `url` input, checked to be a usable base URL, as the parsed URL's origin and path
 * without trailing slashes: the URL checked is the URL used.
 */
function serviceBase(raw) {
  // `?` and `#` even when empty: the parser reports an empty query or fragment as "".
  if (raw.includes('?') || raw.includes('#')) {
    throw new ActionError(`url: ${JSON.stringify(raw)} must not carry a query, fragment or credentials`);
  }
  let parsed;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ActionError(`url: ${JSON.stringify(raw)} is not an absolute URL`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new ActionError(`url: ${JSON.stringify(raw)} must be an https:// URL`);
  }
  if (parsed.protocol === 'http:' && !isLoopback(parsed.hostname)) {
    throw new ActionError(
      `url: ${JSON.stringify(raw)}: http:// is allowed only to a loopback host; ` +
        'anywhere else the OIDC token and the access token would cross the network in the clear',
    );
  }
  if (parsed.search || parsed.hash || parsed.username || parsed.password) {
    throw new ActionError(`url: ${JSON.stringify(raw)} must not carry a query, fragment or credentials`);
  }
  return `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
}

function exportName(raw) {
  if (!raw) return null;
  if (!ENV_NAME.test(raw)) {
    throw new ActionError(
      `export-env: ${JSON.stringify(raw)} is not a valid environment variable name (expected [A-Za-z_][A-Za-z0-9_]*)`,
    );
  }
  const upper = raw.toUpperCase();
  if (upper.startsWith('GITHUB_') || upper.startsWith('RUNNER_') || upper === 'NODE_OPTIONS') {
    throw new ActionError(`export-env: ${JSON.stringify(raw)} is a name the runner does not let a step set`);
  }
  return raw;
}

function retryCount(raw) {
  const text = raw === '' ? '3' : raw;
  if (!/^\d+$/.test(text) || Number(text) > MAX_RETRIES) {
    throw new ActionError(`retries: ${JSON.stringify(raw)} must be a whole number from 0 to ${MAX_RETRIES}`);
  }
  return Number(text);
}

function readInputs(env) {
  const url = serviceBase(requireInput(env, 'url'));
  return {
    url,
    audience: requireInput(env, 'audience'),
    scope: getInput(env, 'scope'),
    policy: getInput(env, 'policy'),
    oidcAudience: getInput(env, 'oidc-audience') || url,
    exportEnv: exportName(getInput(env, 'export-env')),
    retries: retryCount(getInput(env, 'retries')),
  };
}

/** A claim's value for one log line; absent said so. */
function shown(value) {
  if (value === undefined || value === null) return '(not in the token)';
  return showControls(typeof value === 'string' ? value : JSON.stringify(value));
}

function printIdentity(log, token) {
  const claims = decodePayloadUnverified(token);
  if (!claims) {
    log.info("The OIDC token's payload could not be decoded; tokenmint will say what is wrong with it.");
    return;
  }
  log.info(
    'The job, as its OIDC token names it (claims decoded here without verifying the signature; tokenmint verifies it):',
  );
  const run =
    claims.run_id === undefined ? shown(undefined) : `${shown(claims.run_id)} attempt ${shown(claims.run_attempt)}`;
  log.info(`  repository: ${shown(claims.repository)}`);
  log.info(`  ref: ${shown(claims.ref)}`);
  log.info(`  environment: ${shown(claims.environment)}`);
  log.info(`  workflow: ${shown(claims.workflow_ref ?? claims.workflow)}`);
  log.info(`  run: ${run}`);
}

const text = (value) => (typeof value === 'string' ? value : typeof value === 'number' ? String(value) : '');

async function main(env, log) {
  const inputs = readInputs(env);
  if (!env.GITHUB_OUTPUT) {
    throw new ActionError('GITHUB_OUTPUT is not set: this action runs as a step of a GitHub Actions job');
  }
  if (inputs.exportEnv && !env.GITHUB_ENV) {
    throw new ActionError('GITHUB_ENV is not set, so export-env cannot export the token');
  }
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new ActionError(
      'This job cannot request an OIDC token: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set. ' +
        'Give the job `permissions: id-token: write` (a job that sets permissions gets only those it lists). ' +
        'Pull requests from forks get no OIDC token, whatever the workflow asks for.',
      'tokenmint: no OIDC token',
    );
  }
  log.hide(requestToken);

  log.debug(`requesting an OIDC token for audience ${inputs.oidcAudience}`);
  const oidc = await requestOidcToken({
    requestUrl,
    requestToken,
    audience: inputs.oidcAudience,
    retries: inputs.retries,
    log,
    onToken: (token) => log.mask(token),
  });
  if (oidc.fail) {
    throw new ActionError(
      `The runner issued no OIDC token for audience ${inputs.oidcAudience}: ${oidc.fail.summary}`,
      'tokenmint: no OIDC token',
    );
  }
  printIdentity(log, oidc.ok);

  const endpoint = `${inputs.url}/token`;
  const result = await exchange({
    endpoint,
    subjectToken: oidc.ok,
    audience: inputs.audience,
    scope: inputs.scope,
    policy: inputs.policy,
    retries: inputs.retries,
    log,
  });
  if (result.fail) {
    const fail = result.fail;
    const id = fail.request_id || 'none';
    const what = fail.error
      ? `${fail.error}: ${fail.error_description || '(no description)'} (HTTP ${fail.status}, request_id ${id})`
      : `${fail.summary}${fail.request_id ? ` (request_id ${fail.request_id})` : ''}`;
    if (result.exhausted) {
      log.error(`gave up after ${result.attempts} attempts: ${what}`, 'tokenmint exchange failed');
    } else {
      log.error(what, 'tokenmint denied the exchange');
    }
    // These come after verification, so tokenmint audited the decision (contract: "Audit
    // trail"); earlier refusals and failures are only in its log and metrics.
    if (!result.exhausted && fail.request_id && AUDITED_DENIALS.has(fail.error)) {
      log.info(`The decision is in the audit trail: tokenmint audit show ${fail.request_id}`);
    }
    return 1;
  }

  const response = result.ok;
  const token = response.access_token;
  // Masked before it is written anywhere: outputs and env files reach later steps' logs.
  log.mask(token);
  const sha256 = crypto.createHash('sha256').update(token, 'utf8').digest('hex');
  appendFileCommand('GITHUB_OUTPUT', [
    ['token', token],
    ['expires-in', text(response.expires_in)],
    ['scope', text(response.scope)],
    ['policy', text(response.policy)],
    ['request-id', text(response.request_id)],
    ['token-sha256', sha256],
  ]);
  if (inputs.exportEnv) appendFileCommand('GITHUB_ENV', [[inputs.exportEnv, token]]);

  log.info(`Exchanged at ${endpoint} (attempt ${result.attempts} of ${inputs.retries + 1}):`);
  log.info(`  target: ${shown(response.target)}`);
  log.info(`  scope: ${shown(response.scope)}`);
  log.info(`  policy: ${shown(response.policy)}`);
  log.info(`  expires in: ${shown(response.expires_in)} s`);
  log.info(`  request id: ${shown(response.request_id)}`);
  log.info(`  token sha256: ${sha256}`);
  if (inputs.exportEnv) log.info(`  exported to later steps as: ${inputs.exportEnv}`);
  log.info(`Find this exchange in the audit trail: tokenmint audit show ${text(response.request_id) || sha256}`);
  return 0;
}

/** Runs the action; resolves to the exit code (also set as process.exitCode). */
async function run(env = process.env, log = new Log()) {
  let code;
  try {
    code = await main(env, log);
  } catch (err) {
    if (err instanceof ActionError) {
      log.error(err.message, err.title);
    } else {
      log.error(`unexpected failure: ${(err && err.stack) || err}`, 'tokenmint');
    }
    code = 1;
  }
  process.exitCode = code;
  return code;
}

module.exports = { run, readInputs, ActionError };
