//! The audit trail's hash chain: how a record is linked to the one before it in its
//! replica's chain, and the walk `tokenmint audit verify` makes over a chain.
//!
//! A record's hash covers its replica, its sequence number, the previous record's hash
//! and the record's JSON exactly as stored. Altering a record breaks its hash; inserting
//! or removing one breaks the link of the next; removing the newest records is caught by
//! the chain head (unless that was rewritten too) and by a checkpoint taken from the log.

use std::collections::HashMap;
use std::fmt;

use crate::trust::hash::sha256_of_parts;

/// The previous hash of a chain's first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of record `seq` of `replica`, whose JSON is `record_json`.
pub fn link_hash(replica: &str, seq: u64, prev_hash: &str, record_json: &str) -> String {
    let seq = seq.to_string();
    hex::encode(sha256_of_parts([
        &b"tokenmint-audit-v1\n"[..],
        replica.as_bytes(),
        b"\n",
        seq.as_bytes(),
        b"\n",
        prev_hash.as_bytes(),
        b"\n",
        record_json.as_bytes(),
    ]))
}

/// A chain's head as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub replica: String,
    pub last_seq: u64,
    pub last_hash: String,
    /// Records up to here were purged by retention.
    pub anchor_seq: u64,
    pub anchor_hash: String,
}

/// One stored record, as `audit verify` reads it.
#[derive(Debug, Clone)]
pub struct StoredLink {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub record_json: String,
    /// The query columns stored beside the JSON: (column, value).
    pub columns: Vec<(&'static str, Option<String>)>,
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub replica: String,
    pub seq: u64,
    pub what: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replica {} record {}: {}",
            self.replica, self.seq, self.what
        )
    }
}

/// A point of a chain seen earlier (in the service's log): the chain must still hold
/// record `seq` with this hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub replica: String,
    pub seq: u64,
    pub hash: String,
}

/// Derives the query columns from a record's JSON (so that a column altered to hide a
/// record from a filter is caught), or says why the JSON is not a record.
pub type ExpectedColumns<'f> =
    &'f dyn Fn(&str) -> Result<Vec<(&'static str, Option<String>)>, String>;

/// A walk over one chain from its anchor, fed the stored records in `seq` order.
pub struct ChainWalk<'h, 'f> {
    head: &'h ChainHead,
    expected_columns: ExpectedColumns<'f>,
    expected_seq: u64,
    prev_hash: String,
    checked: u64,
}

impl<'h, 'f> ChainWalk<'h, 'f> {
    pub fn new(head: &'h ChainHead, expected_columns: ExpectedColumns<'f>) -> Self {
        Self {
            head,
            expected_columns,
            expected_seq: head.anchor_seq + 1,
            prev_hash: head.anchor_hash.clone(),
            checked: 0,
        }
    }

    fn fail(&self, seq: u64, what: String) -> ChainBreak {
        ChainBreak {
            replica: self.head.replica.clone(),
            seq,
            what,
        }
    }

    /// Checks the next stored record.
    pub fn push(&mut self, link: StoredLink) -> Result<(), ChainBreak> {
        if link.seq != self.expected_seq {
            return Err(if link.seq > self.expected_seq {
                self.fail(
                    self.expected_seq,
                    format!(
                        "is missing (the next record present is {}): records were removed",
                        link.seq
                    ),
                )
            } else if link.seq <= self.head.anchor_seq {
                self.fail(
                    link.seq,
                    "lies in the purged part of the chain, before its anchor: it was inserted"
                        .to_owned(),
                )
            } else {
                self.fail(link.seq, "appears twice or out of order".to_owned())
            });
        }
        if link.prev_hash != self.prev_hash {
            return Err(self.fail(
                link.seq,
                "does not link to the record before it: a record was inserted, removed or rewritten before it".to_owned(),
            ));
        }
        if link_hash(
            &self.head.replica,
            link.seq,
            &link.prev_hash,
            &link.record_json,
        ) != link.hash
        {
            return Err(self.fail(
                link.seq,
                "was altered: its contents do not match its hash".to_owned(),
            ));
        }
        let expected = (self.expected_columns)(&link.record_json)
            .map_err(|err| self.fail(link.seq, format!("was altered: its JSON {err}")))?;
        for (column, value) in &link.columns {
            let wanted = expected
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, value)| value);
            if wanted != Some(value) {
                return Err(self.fail(
                    link.seq,
                    format!("was altered: column {column} differs from the hashed record"),
                ));
            }
        }
        self.prev_hash = link.hash;
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks that the chain ended where its head says; returns the records checked.
    pub fn finish(self) -> Result<u64, ChainBreak> {
        let last_seq = self.expected_seq - 1;
        if last_seq > self.head.last_seq {
            return Err(self.fail(
                self.head.last_seq + 1,
                format!(
                    "was added: the chain's head ends it at record {}, yet records up to {last_seq} follow",
                    self.head.last_seq
                ),
            ));
        }
        if last_seq != self.head.last_seq {
            return Err(self.fail(
                last_seq + 1,
                format!(
                    "is missing: the chain ends at record {last_seq} but its head says {}: the newest records were removed",
                    self.head.last_seq
                ),
            ));
        }
        if self.prev_hash != self.head.last_hash {
            return Err(self.fail(
                last_seq,
                "does not match the chain head's hash: the newest record was rewritten".to_owned(),
            ));
        }
        Ok(self.checked)
    }
}

/// Walks a whole chain held in memory (see [`ChainWalk`]).
pub fn verify_chain(
    head: &ChainHead,
    links: impl IntoIterator<Item = StoredLink>,
    expected_columns: ExpectedColumns<'_>,
) -> Result<u64, ChainBreak> {
    let mut walk = ChainWalk::new(head, expected_columns);
    for link in links {
        walk.push(link)?;
    }
    walk.finish()
}

/// Checks the chains against checkpoints: each checkpointed record must still be there
/// with the same hash. `hash_of(replica, seq)` looks a record's hash up (the anchor's hash
/// for a purged anchor record); `None` when the record is gone.
pub fn verify_checkpoints(
    heads: &[ChainHead],
    checkpoints: &[Checkpoint],
    hash_of: impl Fn(&str, u64) -> Option<String>,
) -> Result<usize, ChainBreak> {
    let heads: HashMap<&str, &ChainHead> = heads.iter().map(|h| (h.replica.as_str(), h)).collect();
    for checkpoint in checkpoints {
        let fail = |what: String| ChainBreak {
            replica: checkpoint.replica.clone(),
            seq: checkpoint.seq,
            what,
        };
        let Some(head) = heads.get(checkpoint.replica.as_str()) else {
            return Err(fail(
                "is missing: the checkpoint names a chain the store no longer has".to_owned(),
            ));
        };
        if checkpoint.seq > head.last_seq {
            return Err(fail(format!(
                "is missing: a checkpoint saw it, but the chain now ends at record {}: the newest records were removed",
                head.last_seq
            )));
        }
        if checkpoint.seq < head.anchor_seq {
            // Purged by retention; the anchor vouches for what came after.
            continue;
        }
        let found = if checkpoint.seq == head.anchor_seq {
            Some(head.anchor_hash.clone())
        } else {
            hash_of(&checkpoint.replica, checkpoint.seq)
        };
        match found {
            Some(hash) if hash == checkpoint.hash => {}
            Some(_) => {
                return Err(fail(
                    "differs from the checkpoint: the chain was rewritten from here".to_owned(),
                ));
            }
            None => return Err(fail("is missing, though a checkpoint saw it".to_owned())),
        }
    }
    Ok(checkpoints.len())
}

/// Reads checkpoints from a service log (text or JSON lines) or a file of
/// `replica seq hash` lines. Lines that are not checkpoints are skipped.
pub fn parse_checkpoints(text: &str) -> Vec<Checkpoint> {
    text.lines().filter_map(parse_checkpoint_line).collect()
}

fn parse_checkpoint_line(line: &str) -> Option<Checkpoint> {
    let plain = without_ansi_escapes(line);
    let line = plain.trim();
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = value.get("fields").unwrap_or(&value);
        if fields.get("message")?.as_str()? != CHECKPOINT_MESSAGE {
            return None;
        }
        return checkpoint(
            fields.get("replica")?.as_str()?,
            &fields.get("seq")?.to_string(),
            fields.get("hash")?.as_str()?,
        );
    }
    if line.contains(CHECKPOINT_MESSAGE) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                .map(|value| value.trim_matches('"'))
        };
        return checkpoint(field("replica")?, field("seq")?, field("hash")?);
    }
    let mut words = line.split_whitespace();
    let (replica, seq, hash) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    checkpoint(replica, seq, hash)
}

/// `line` without terminal colour sequences (`ESC [ ... m`), which a log written by an
/// older version, or through a terminal, may carry around field names.
fn without_ansi_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn checkpoint(replica: &str, seq: &str, hash: &str) -> Option<Checkpoint> {
    let seq = seq.parse().ok()?;
    let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hash && !replica.is_empty()).then(|| Checkpoint {
        replica: replica.to_owned(),
        seq,
        hash: hash.to_ascii_lowercase(),
    })
}

/// The message of the service's checkpoint log line.
pub const CHECKPOINT_MESSAGE: &str = "audit checkpoint";

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> (ChainHead, Vec<StoredLink>) {
        let mut prev = GENESIS_HASH.to_owned();
        let mut links = Vec::new();
        for seq in 1..=n {
            let json = format!(r#"{{"request_id":"r{seq}"}}"#);
            let hash = link_hash("rep", seq, &prev, &json);
            links.push(StoredLink {
                seq,
                prev_hash: prev.clone(),
                hash: hash.clone(),
                record_json: json,
                columns: vec![("request_id", Some(format!("r{seq}")))],
            });
            prev = hash;
        }
        let head = ChainHead {
            replica: "rep".to_owned(),
            last_seq: n,
            last_hash: prev,
            anchor_seq: 0,
            anchor_hash: GENESIS_HASH.to_owned(),
        };
        (head, links)
    }

    fn columns(json: &str) -> Result<Vec<(&'static str, Option<String>)>, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Ok(vec![(
            "request_id",
            value["request_id"].as_str().map(str::to_owned),
        )])
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (head, links) = chain(3);
        assert_eq!(verify_chain(&head, links, &columns), Ok(3));
    }

    #[test]
    fn an_altered_record_is_named() {
        let (head, mut links) = chain(3);
        links[1].record_json = r#"{"request_id":"forged"}"#.to_owned();
        let err = verify_chain(&head, links, &columns).expect_err("altered");
        assert_eq!(err.seq, 2);
        assert_eq!(err.what, "was altered: its contents do not match its hash");
    }

    #[test]
    fn an_altered_query_column_is_named() {
        let (head, mut links) = chain(3);
        links[2].columns = vec![("request_id", Some("other".to_owned()))];
        let err = verify_chain(&head, links, &columns).expect_err("altered");
        assert_eq!(
            err.to_string(),
            "replica rep record 3: was altered: column request_id differs from the hashed record"
        );
    }

    #[test]
    fn a_removed_record_is_named() {
        let (head, mut links) = chain(4);
        links.remove(1);
        let err = verify_chain(&head, links, &columns).expect_err("removed");
        assert_eq!(err.seq, 2);
        assert!(err.what.starts_with("is missing"), "{}", err.what);
    }

    #[test]
    fn an_inserted_record_is_named() {
        let (head, mut links) = chain(3);
        // A forged record 2 with a correct own hash but renumbered followers.
        let forged = r#"{"request_id":"x"}"#.to_owned();
        let hash = link_hash("rep", 2, &links[0].hash, &forged);
        links.insert(
            1,
            StoredLink {
                seq: 2,
                prev_hash: links[0].hash.clone(),
                hash,
                record_json: forged,
                columns: vec![("request_id", Some("x".to_owned()))],
            },
        );
        for (index, link) in links.iter_mut().enumerate().skip(2) {
            link.seq = index as u64 + 1;
        }
        let err = verify_chain(&head, links, &columns).expect_err("inserted");
        assert_eq!(err.seq, 3);
        assert!(err.what.starts_with("does not link"), "{}", err.what);
    }

    #[test]
    fn truncation_is_caught_by_the_head_and_by_a_checkpoint() {
        let (head, mut links) = chain(4);
        let checkpoint = Checkpoint {
            replica: "rep".to_owned(),
            seq: 4,
            hash: head.last_hash.clone(),
        };
        links.truncate(2);
        let err = verify_chain(&head, links.clone(), &columns).expect_err("truncated");
        assert_eq!(err.seq, 3);
        // An attacker who also rewrites the head passes the walk, not the checkpoint.
        let rewritten = ChainHead {
            last_seq: 2,
            last_hash: links[1].hash.clone(),
            ..head
        };
        assert_eq!(verify_chain(&rewritten, links.clone(), &columns), Ok(2));
        let err = verify_checkpoints(&[rewritten], &[checkpoint], |_, seq| {
            links.iter().find(|l| l.seq == seq).map(|l| l.hash.clone())
        })
        .expect_err("checkpoint");
        assert_eq!(err.seq, 4);
        assert!(
            err.what.contains("newest records were removed"),
            "{}",
            err.what
        );
    }

    #[test]
    fn checkpoints_are_read_from_text_and_json_logs() {
        let hash = "ab".repeat(32);
        let text = format!(
            "2026-12-01T00:00:00Z  INFO tokenmint::edges::service: audit checkpoint replica=r1 seq=7 hash={hash}\n\
             {{\"timestamp\":\"x\",\"level\":\"INFO\",\"fields\":{{\"message\":\"audit checkpoint\",\"replica\":\"r2\",\"seq\":9,\"hash\":\"{hash}\"}}}}\n\
             r3 11 {hash}\n\
             \u{1b}[2m2026-12-01\u{1b}[0m INFO audit checkpoint \u{1b}[3mreplica\u{1b}[0m\u{1b}[2m=\u{1b}[0mr4 \u{1b}[3mseq\u{1b}[0m\u{1b}[2m=\u{1b}[0m12 \u{1b}[3mhash\u{1b}[0m\u{1b}[2m=\u{1b}[0m{hash}\n\
             unrelated line\n"
        );
        let found = parse_checkpoints(&text);
        let seen: Vec<(&str, u64)> = found.iter().map(|c| (c.replica.as_str(), c.seq)).collect();
        assert_eq!(seen, [("r1", 7), ("r2", 9), ("r3", 11), ("r4", 12)]);
    }
}
