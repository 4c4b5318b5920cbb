//! The audit trail's hash chain: how a record is linked to the one before it in its
//! replica's chain, and the walk `tokenmint audit verify` makes over a chain.
//!
//! A record's hash covers its replica, its sequence number, the previous record's hash
//! and the record's JSON exactly as stored. Altering a record breaks its hash; inserting
//! or removing one breaks the link of the next; removing the newest records is caught by
//! the chain head (unless that was rewritten too) and by a checkpoint taken from the log.
//!
//! Retention removes the oldest records but keeps the newest of those it could remove as
//! the chain's *anchor*: the walk starts there. Security: the anchor record stays, hashed
//! and linked to the records after it, so its time is evidence that the records before it
//! were old enough to purge. A cut younger than `storage.audit_retention` is a removal,
//! and `audit verify` fails on it (`a_young_anchor_is_a_removal_not_a_purge`); moving the
//! anchor in the `replicas` table alone is caught because its record must be there.

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
    /// The oldest record kept: records before it were purged by retention (0 when none
    /// were).
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

/// How old a chain's anchor must be: retention purges only records older than
/// `storage.audit_retention`, so an anchor newer than `newest_us` (Unix microseconds) means
/// records were removed by something else.
#[derive(Debug, Clone)]
pub struct AnchorAge {
    pub newest_us: i64,
    /// `storage.audit_retention` as configured, for the message.
    pub retention: String,
}

/// A walk over one chain from its anchor, fed the stored records in `seq` order.
pub struct ChainWalk<'h, 'f> {
    head: &'h ChainHead,
    expected_columns: ExpectedColumns<'f>,
    anchor_age: AnchorAge,
    expected_seq: u64,
    prev_hash: String,
    checked: u64,
}

impl<'h, 'f> ChainWalk<'h, 'f> {
    pub fn new(
        head: &'h ChainHead,
        expected_columns: ExpectedColumns<'f>,
        anchor_age: AnchorAge,
    ) -> Self {
        Self {
            head,
            expected_columns,
            anchor_age,
            expected_seq: head.anchor_seq.max(1),
            prev_hash: if head.anchor_seq > 1 {
                head.anchor_hash.clone()
            } else {
                GENESIS_HASH.to_owned()
            },
            checked: 0,
        }
    }

    /// Whether `seq` is a purged chain's anchor, whose predecessor is gone (retention
    /// only moves the anchor past record 1 when it removes records before it).
    fn is_anchor(&self, seq: u64) -> bool {
        self.head.anchor_seq > 1 && seq == self.head.anchor_seq
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
            return Err(if link.seq < self.head.anchor_seq {
                self.fail(
                    link.seq,
                    "lies in the purged part of the chain, before its anchor: it was inserted"
                        .to_owned(),
                )
            } else if self.is_anchor(self.expected_seq) {
                self.fail(
                    self.expected_seq,
                    format!(
                        "is missing, though the chain starts there (the next record present is {}): records were removed",
                        link.seq
                    ),
                )
            } else if link.seq > self.expected_seq {
                self.fail(
                    self.expected_seq,
                    format!(
                        "is missing (the next record present is {}): records were removed",
                        link.seq
                    ),
                )
            } else {
                self.fail(link.seq, "appears twice or out of order".to_owned())
            });
        }
        if self.is_anchor(link.seq) {
            if link.hash != self.head.anchor_hash {
                return Err(self.fail(
                    link.seq,
                    "differs from the chain's anchor: it was rewritten, or the anchor moved"
                        .to_owned(),
                ));
            }
        } else if link.prev_hash != self.prev_hash {
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
        if self.is_anchor(link.seq) {
            self.check_anchor_age(link.seq, &expected)?;
        }
        self.prev_hash = link.hash;
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// The anchor is older than retention allows to keep, or records were removed.
    fn check_anchor_age(
        &self,
        seq: u64,
        columns: &[(&'static str, Option<String>)],
    ) -> Result<(), ChainBreak> {
        let time_us = columns
            .iter()
            .find(|(name, _)| *name == "time_us")
            .and_then(|(_, value)| value.as_deref()?.parse::<i64>().ok())
            .ok_or_else(|| self.fail(seq, "was altered: its JSON has no time".to_owned()))?;
        if time_us <= self.anchor_age.newest_us {
            return Ok(());
        }
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_us) * 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{time_us} µs"));
        Err(self.fail(
            seq,
            format!(
                "is where the chain starts, so records 1 to {} were taken out, yet it is from {time}, younger than storage.audit_retention ({}): they were removed, not purged (or the retention was shorter when they were)",
                seq - 1,
                self.anchor_age.retention
            ),
        ))
    }

    /// Checks that the chain ended where its head says; returns the records checked.
    pub fn finish(self) -> Result<u64, ChainBreak> {
        if self.is_anchor(self.expected_seq) {
            return Err(self.fail(
                self.expected_seq,
                "is missing, though the chain starts there: records were removed".to_owned(),
            ));
        }
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
    anchor_age: AnchorAge,
) -> Result<u64, ChainBreak> {
    let mut walk = ChainWalk::new(head, expected_columns, anchor_age);
    for link in links {
        walk.push(link)?;
    }
    walk.finish()
}

/// What the checkpoints showed: how many records they name were found as they saw them,
/// and how many lie before their chain's anchor (purged, so not checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    pub matched: usize,
    pub purged: usize,
}

/// Checks the chains against checkpoints: each checkpointed record must still be there
/// with the same hash, unless retention purged it (it lies before its chain's anchor, whose
/// age the walk checked). `hash_of(replica, seq)` looks a record's hash up; `None` when
/// the record is gone.
pub fn verify_checkpoints(
    heads: &[ChainHead],
    checkpoints: &[Checkpoint],
    hash_of: impl Fn(&str, u64) -> Option<String>,
) -> Result<CheckpointReport, ChainBreak> {
    let heads: HashMap<&str, &ChainHead> = heads.iter().map(|h| (h.replica.as_str(), h)).collect();
    let mut report = CheckpointReport::default();
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
            report.purged += 1;
            continue;
        }
        // Record 0 is the empty chain, whose "hash" is the genesis hash.
        let found = if checkpoint.seq == 0 {
            Some(GENESIS_HASH.to_owned())
        } else {
            hash_of(&checkpoint.replica, checkpoint.seq)
        };
        match found {
            Some(hash) if hash == checkpoint.hash => report.matched += 1,
            Some(_) => {
                return Err(fail(
                    "differs from the checkpoint: the chain was rewritten from here".to_owned(),
                ));
            }
            None => return Err(fail("is missing, though a checkpoint saw it".to_owned())),
        }
    }
    Ok(report)
}

/// `line` cut at whitespace outside double quotes; a quoted value (with its `\"`
/// escapes) stays within its word.
fn unquoted_words(line: &str) -> Vec<String> {
    let (mut words, mut word) = (Vec::new(), String::new());
    let (mut quoted, mut escaped) = (false, false);
    for c in line.chars() {
        if quoted {
            word.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
        } else if c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else {
            quoted = c == '"';
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
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
        // Security: only words outside quoted values count. A caller's text reaches the
        // log only inside a quoted field (`detail="…"`, quotes escaped), so an audience
        // that spells out a checkpoint cannot plant one
        // (`a_checkpoint_spelled_inside_a_logged_value_is_not_read`).
        let words = unquoted_words(line);
        let message: Vec<&str> = CHECKPOINT_MESSAGE.split(' ').collect();
        if !words.windows(message.len()).any(|window| {
            window
                .iter()
                .map(String::as_str)
                .eq(message.iter().copied())
        }) {
            return None;
        }
        let field = |name: &str| {
            words
                .iter()
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
            // Record n is from n seconds after the epoch.
            let json = format!(r#"{{"request_id":"r{seq}","time_us":{}}}"#, seq * 1_000_000);
            let hash = link_hash("rep", seq, &prev, &json);
            links.push(StoredLink {
                seq,
                prev_hash: prev.clone(),
                hash: hash.clone(),
                columns: columns(&json).expect("columns"),
                record_json: json,
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
        Ok(vec![
            (
                "request_id",
                value["request_id"].as_str().map(str::to_owned),
            ),
            ("time_us", value["time_us"].as_i64().map(|t| t.to_string())),
        ])
    }

    /// A retention ("400d") under which anchors up to `newest_us` are old enough.
    fn anchors_up_to(newest_us: i64) -> AnchorAge {
        AnchorAge {
            newest_us,
            retention: "400d".to_owned(),
        }
    }

    /// Retention that any anchor of these chains is old enough for.
    fn any_age() -> AnchorAge {
        anchors_up_to(i64::MAX)
    }

    /// `chain(n)` after retention purged the records before `anchor`.
    fn purged(n: u64, anchor: u64) -> (ChainHead, Vec<StoredLink>) {
        let (mut head, mut links) = chain(n);
        head.anchor_seq = anchor;
        head.anchor_hash = links[anchor as usize - 1].hash.clone();
        links.drain(..anchor as usize - 1);
        (head, links)
    }

    #[test]
    fn a_purged_chain_verifies_from_its_anchor_record() {
        let (head, links) = purged(5, 3);
        let old_enough = anchors_up_to(3_000_000);
        assert_eq!(verify_chain(&head, links, &columns, old_enough), Ok(3));
    }

    #[test]
    fn a_young_anchor_is_a_removal_not_a_purge() {
        let (head, links) = purged(5, 3);
        // Retention keeps everything newer than 2 s: record 3 (3 s) was not purgeable,
        // so neither were the two before it.
        let retention = anchors_up_to(2_000_000);
        let err = verify_chain(&head, links, &columns, retention).expect_err("removed");
        assert_eq!(
            err.to_string(),
            "replica rep record 3: is where the chain starts, so records 1 to 2 were taken out, yet it is from 1970-01-01T00:00:03Z, younger than storage.audit_retention (400d): they were removed, not purged (or the retention was shorter when they were)"
        );
    }

    #[test]
    fn an_anchor_moved_past_deleted_records_is_caught() {
        // Everything deleted and the anchor set to the head, as if purged.
        let (mut head, links) = chain(4);
        (head.anchor_seq, head.anchor_hash) = (4, head.last_hash.clone());
        let err = verify_chain(&head, Vec::new(), &columns, any_age()).expect_err("erased");
        assert_eq!(
            err.to_string(),
            "replica rep record 4: is missing, though the chain starts there: records were removed"
        );
        // Records 1 and 2 deleted, the anchor moved to 2, whose record is gone too.
        let (mut head, _) = chain(4);
        (head.anchor_seq, head.anchor_hash) = (2, links[1].hash.clone());
        let err =
            verify_chain(&head, links[2..].to_vec(), &columns, any_age()).expect_err("removed");
        assert_eq!(err.seq, 2);
        assert!(
            err.what
                .starts_with("is missing, though the chain starts there")
        );
        // A record slipped in before the anchor.
        let (head, mut links) = purged(4, 3);
        let mut forged = links[0].clone();
        forged.seq = 1;
        links.insert(0, forged);
        let err = verify_chain(&head, links, &columns, any_age()).expect_err("inserted");
        assert_eq!(err.seq, 1);
        assert!(err.what.ends_with("it was inserted"), "{}", err.what);
        // The anchor pointed at a kept record with another hash.
        let (mut head, links) = purged(4, 2);
        head.anchor_hash = GENESIS_HASH.to_owned();
        let err = verify_chain(&head, links, &columns, any_age()).expect_err("moved");
        assert_eq!(
            err.what,
            "differs from the chain's anchor: it was rewritten, or the anchor moved"
        );
    }

    #[test]
    fn checkpoints_before_the_anchor_are_counted_apart() {
        let (head, links) = purged(5, 3);
        let at = |seq: u64| Checkpoint {
            replica: "rep".to_owned(),
            seq,
            hash: links
                .iter()
                .find(|l| l.seq == seq)
                .map_or_else(|| "gone".to_owned(), |l| l.hash.clone()),
        };
        let report = verify_checkpoints(&[head], &[at(1), at(3), at(5)], |_, seq| {
            links.iter().find(|l| l.seq == seq).map(|l| l.hash.clone())
        });
        assert_eq!(
            report,
            Ok(CheckpointReport {
                matched: 2,
                purged: 1
            })
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (head, links) = chain(3);
        assert_eq!(verify_chain(&head, links, &columns, any_age()), Ok(3));
    }

    #[test]
    fn an_altered_record_is_named() {
        let (head, mut links) = chain(3);
        links[1].record_json = r#"{"request_id":"forged"}"#.to_owned();
        let err = verify_chain(&head, links, &columns, any_age()).expect_err("altered");
        assert_eq!(err.seq, 2);
        assert_eq!(err.what, "was altered: its contents do not match its hash");
    }

    #[test]
    fn an_altered_query_column_is_named() {
        let (head, mut links) = chain(3);
        links[2].columns = vec![("request_id", Some("other".to_owned()))];
        let err = verify_chain(&head, links, &columns, any_age()).expect_err("altered");
        assert_eq!(
            err.to_string(),
            "replica rep record 3: was altered: column request_id differs from the hashed record"
        );
    }

    #[test]
    fn a_removed_record_is_named() {
        let (head, mut links) = chain(4);
        links.remove(1);
        let err = verify_chain(&head, links, &columns, any_age()).expect_err("removed");
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
        let err = verify_chain(&head, links, &columns, any_age()).expect_err("inserted");
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
        let err = verify_chain(&head, links.clone(), &columns, any_age()).expect_err("truncated");
        assert_eq!(err.seq, 3);
        // An attacker who also rewrites the head passes the walk, not the checkpoint.
        let rewritten = ChainHead {
            last_seq: 2,
            last_hash: links[1].hash.clone(),
            ..head
        };
        assert_eq!(
            verify_chain(&rewritten, links.clone(), &columns, any_age()),
            Ok(2)
        );
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

    #[test]
    fn a_checkpoint_spelled_inside_a_logged_value_is_not_read() {
        let hash = "ab".repeat(32);
        // A decision line whose detail quotes the audience a caller sent, escapes and all.
        let planted = format!(
            "2026-12-01T00:00:00Z  INFO tokenmint::trust::audit: exchange decided request_id=req-1 \
             outcome=deny detail=\"no target named or with audience \\\"x audit checkpoint \
             replica=real seq=99999999 hash={hash} y\\\"\" policy=none"
        );
        assert_eq!(parse_checkpoints(&planted), Vec::new());
        // A quoted value that ends before the message leaves the real one readable.
        let real = format!(
            "2026-12-01T00:00:00Z  INFO serve{{listen=\"0.0.0.0 :8080\"}}: audit checkpoint replica=r1 seq=7 hash={hash}"
        );
        let found = parse_checkpoints(&real);
        assert_eq!(
            found,
            [Checkpoint {
                replica: "r1".to_owned(),
                seq: 7,
                hash
            }]
        );
    }
}
