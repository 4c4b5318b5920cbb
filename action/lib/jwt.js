'use strict';
// Token-shaped strings: recognising them (to keep them out of the log) and reading a JWT's
// payload without verifying it (tokenmint verifies; the action only shows what it sent).

// Runs of base64url characters and dots: every token-shaped string lies inside one.
const RUN = /[A-Za-z0-9_.-]+/g;
// The shape of a compact JWS as a whole string.
const JWS_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const REMOVED = '[token removed]';

/**
 * True when a run (base64url characters and dots) holds a token: a JWS or JWE whose header
 * is a JSON object (base64url of `{"` starts with `eyJ`: `eyJ…` + a non-empty segment + a
 * third one), or three consecutive base64url segments of 16 or more characters (host names
 * have short labels). Linear in the run's length: a split and a pass over the segments, no
 * backtracking regex (those were quadratic on a long run of base64url characters).
 */
function holdsToken(run) {
  if (!run.includes('.')) return false;
  const segs = run.split('.');
  for (let i = 0; i + 2 < segs.length; i++) {
    const at = segs[i].indexOf('eyJ');
    if (at >= 0 && at + 3 < segs[i].length && segs[i + 1] !== '') return true;
    if (segs[i].length >= 16 && segs[i + 1].length >= 16 && segs[i + 2].length >= 16) return true;
  }
  return false;
}

/** Replaces every run of base64url characters and dots that holds a token with a placeholder. */
function scrub(text) {
  return String(text).replace(RUN, (run) => (holdsToken(run) ? REMOVED : run));
}

/** True when `token` is shaped like a compact JWS (three base64url segments). */
function isJwsShaped(token) {
  return typeof token === 'string' && JWS_SHAPE.test(token);
}

/**
 * The payload of a compact JWS as an object, decoded WITHOUT verifying the signature;
 * null when it is not one.
 */
function decodePayloadUnverified(token) {
  if (!isJwsShaped(token)) return null;
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
    return payload !== null && typeof payload === 'object' && !Array.isArray(payload) ? payload : null;
  } catch {
    return null;
  }
}

module.exports = { scrub, isJwsShaped, decodePayloadUnverified, REMOVED };
