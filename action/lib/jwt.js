'use strict';
// Token-shaped strings: recognising them (to keep them out of the log) and reading a JWT's
// payload without verifying it (tokenmint verifies; the action only shows what it sent).

// A JWS or JWE whose header is a JSON object: base64url of `{"` starts with `eyJ`.
const JOSE_LIKE = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?/g;
// Any other three long base64url segments joined by dots (host names have short labels).
const THREE_SEGMENTS = /[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}/g;
// The shape of a compact JWS as a whole string.
const JWS_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const REMOVED = '[token removed]';

/** Replaces every token-shaped substring of `text` with a placeholder. */
function scrub(text) {
  return String(text).replace(JOSE_LIKE, REMOVED).replace(THREE_SEGMENTS, REMOVED);
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
