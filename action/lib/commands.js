'use strict';
// GitHub Actions workflow commands (stdout) and file commands (GITHUB_OUTPUT, GITHUB_ENV).
//
// Everything the action prints goes through a Log: it is the only place a secret is
// written (on its `::add-mask::` line), and it scrubs known secrets and any token-shaped
// string out of every other line, debug lines included.

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const { scrub } = require('./jwt');

/** Escapes a command's message as the runner expects (`%`, CR, LF). */
function escapeData(value) {
  return String(value).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** Escapes a command property's value (also `:` and `,`). */
function escapeProperty(value) {
  return escapeData(value).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

/**
 * `text` with the v1 workflow command prefix `##[` broken up (written `#\x23[`). The runner
 * looks for `##[` anywhere in a line of stdout or stderr, and `##[stop-commands]` would
 * turn off every later command of the step, `::add-mask::` included. Replacing each
 * occurrence cannot create a new one: the `[` that follows is now after `\x23`.
 */
function neutralizeCommands(text) {
  return String(text).replace(/##\[/g, '#\\x23[');
}

/** `text` with control characters written as \xNN. */
function showControls(text) {
  return String(text).replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

class Log {
  /** @param {(text: string) => void} write where lines go (stdout by default) */
  constructor(write = (text) => process.stdout.write(text)) {
    this.write = write;
    this.secrets = [];
  }

  /** Asks the runner to mask `secret` from now on. The only line that carries a secret. */
  mask(secret) {
    this.hide(secret);
    this.write(`::add-mask::${escapeData(secret)}${os.EOL}`);
  }

  /** Keeps `secret` out of this action's own lines without printing it at all. */
  hide(secret) {
    if (secret) this.secrets.push(String(secret));
  }

  /**
   * `text` without any known secret or token-shaped substring, and without `##[` (last:
   * the placeholders could otherwise complete one, as in `##` + `[token removed]`).
   */
  clean(text) {
    let out = String(text);
    for (const secret of this.secrets) out = out.split(secret).join('***');
    return neutralizeCommands(scrub(out));
  }

  /**
   * One plain line. Control characters are shown escaped, so that text from elsewhere (a
   * server's error) cannot start a line of its own and so a workflow command.
   */
  info(text) {
    this.write(`${showControls(this.clean(text))}${os.EOL}`);
  }

  debug(text) {
    this.write(`::debug::${escapeData(this.clean(text))}${os.EOL}`);
  }

  error(text, title) {
    const props = title ? ` title=${escapeProperty(this.clean(title))}` : '';
    this.write(`::error${props}::${escapeData(this.clean(text))}${os.EOL}`);
  }
}

/** One `name<<DELIMITER` block, with a random delimiter that occurs in neither name nor value. */
function fileCommandEntry(name, value) {
  const text = String(value);
  for (let i = 0; i < 16; i++) {
    const delimiter = `ghadelimiter_${crypto.randomUUID()}`;
    if (!text.includes(delimiter) && !name.includes(delimiter)) {
      return `${name}<<${delimiter}${os.EOL}${text}${os.EOL}${delimiter}${os.EOL}`;
    }
  }
  throw new Error(`no delimiter could be found for ${name}`);
}

/**
 * Appends entries ([name, value] pairs) to the file that the environment variable `fileVar`
 * names, in one write.
 */
function appendFileCommand(fileVar, entries) {
  const path = process.env[fileVar];
  if (!path) throw new Error(`${fileVar} is not set`);
  const text = entries.map(([name, value]) => fileCommandEntry(name, value)).join('');
  fs.appendFileSync(path, text, { encoding: 'utf8' });
}

module.exports = { Log, neutralizeCommands, showControls, escapeData, escapeProperty, fileCommandEntry, appendFileCommand };
