//! `tokenmint audit list|show|verify|correlate`: the audit trail as a security analyst
//! reads it. Tables put the job first (repository, workflow, run, commit) in local time;
//! JSON carries every field of the contract; CSV is safe to open in a spreadsheet.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

use crate::adapters::store::chain::{AnchorAge, parse_checkpoints};
use crate::adapters::store::sql::reader::{AuditFilter, AuditReader, StoredRecord};
use crate::config::{Config, TargetKindConfig};
use crate::edges::correlate;
use crate::edges::service::store_location;
use crate::edges::terminal_text::{padded, printable, width};
use crate::trust::audit::{AuditRecord, latest_per_request};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// What `audit list` was asked for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: AuditFilter,
    pub outcome: Option<String>,
    /// Every record, not each request once in its latest state.
    pub every_record: bool,
}

/// Opens the configured store read-only.
pub async fn open_reader(config: &Config) -> anyhow::Result<AuditReader> {
    let Some(location) = store_location(config) else {
        bail!("the audit commands need storage.data_dir or storage.database_url");
    };
    AuditReader::open(&location).await
}

/// `audit list`: the rendered records.
pub async fn list(
    reader: &AuditReader,
    query: &ListQuery,
    format: Format,
    offset: UtcOffset,
) -> anyhow::Result<String> {
    let stored = reader.records(&query.filter).await?;
    let mut records: Vec<AuditRecord> = stored.into_iter().map(|s| s.record).collect();
    if !query.every_record {
        records = latest_per_request(&records);
    }
    if let Some(outcome) = &query.outcome {
        records.retain(|r| r.outcome.as_str() == outcome);
    }
    Ok(match format {
        Format::Table => render_table(&records, offset),
        Format::Json => render_json(&records)?,
        Format::Csv => render_csv(&records)?,
    })
}

/// `audit show`: every record of a request, a token SHA-256 or a jti.
pub async fn show(
    reader: &AuditReader,
    id: &str,
    format: Format,
    offset: UtcOffset,
) -> anyhow::Result<String> {
    let found = reader.find(id).await?;
    if found.is_empty() {
        bail!("no audit record has request id, token SHA-256 or jti {id:?}");
    }
    Ok(match format {
        Format::Json => {
            let records: Vec<AuditRecord> = found.into_iter().map(|s| s.record).collect();
            render_json(&records)?
        }
        Format::Table | Format::Csv => render_detail(&found, offset)?,
    })
}

/// `audit verify`: `Ok((true, text))` when intact, `Ok((false, text))` naming the first
/// bad record. `retention` is `storage.audit_retention`: no chain may start at a record
/// younger than that.
pub async fn verify(
    reader: &AuditReader,
    checkpoint_file: Option<&Path>,
    retention: std::time::Duration,
) -> anyhow::Result<(bool, String)> {
    let checkpoints = match checkpoint_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading checkpoints from {}", path.display()))?;
            let checkpoints = parse_checkpoints(&text);
            if checkpoints.is_empty() {
                bail!(
                    "{} holds no checkpoint: expected the service's \"audit checkpoint\" log lines or lines of `replica seq hash`",
                    path.display()
                );
            }
            checkpoints
        }
    };
    // Replicas purge by their own clocks, and this host's may differ from theirs: an
    // anchor is accepted up to CLOCK_MARGIN younger than the retention.
    let newest = time::Duration::try_from(retention)
        .ok()
        .and_then(|retention| OffsetDateTime::now_utc().checked_sub(retention))
        .and_then(|at| at.checked_add(CLOCK_MARGIN))
        .map_or(i64::MIN, |at| {
            i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MIN)
        });
    let anchor_age = AnchorAge {
        newest_us: newest,
        retention: in_days_or_hours(retention),
    };
    Ok(match reader.verify(&checkpoints, &anchor_age).await? {
        Ok(report) => {
            let records: u64 = report.chains.iter().map(|c| c.1).sum();
            let mut text = format!(
                "audit trail intact: {} in {}",
                plural(records as usize, "record"),
                plural(report.chains.len(), "chain"),
            );
            if report.checkpoints.matched > 0 {
                let _ = write!(
                    text,
                    "; {} matched",
                    plural(report.checkpoints.matched, "checkpoint")
                );
            }
            if report.checkpoints.purged > 0 {
                let _ = write!(
                    text,
                    "; {} named records since purged, not checked",
                    plural(report.checkpoints.purged, "checkpoint")
                );
            }
            text.push('\n');
            for (replica, checked, last, anchor) in &report.chains {
                let _ = write!(
                    text,
                    "  replica {replica}: {} checked, up to record {last}",
                    plural(*checked as usize, "record")
                );
                // Retention's cut is shown, never silently trusted: the walk checked that
                // the record kept where the chain starts is older than the retention.
                if *anchor > 1 {
                    let _ = write!(
                        text,
                        "; records 1 to {} were purged (storage.audit_retention)",
                        anchor - 1
                    );
                }
                text.push('\n');
            }
            (true, text)
        }
        Err(broken) => (false, format!("audit trail broken: {broken}\n")),
    })
}

/// How far apart the clocks of the replicas that purged and of the host running `audit
/// verify` may be before a purge looks like a removal.
pub const CLOCK_MARGIN: time::Duration = time::Duration::hours(1);

/// `storage.audit_retention` as an operator writes it: `"400d"`, `"36h"`.
fn in_days_or_hours(retention: std::time::Duration) -> String {
    let secs = retention.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ => crate::config::format_duration(retention),
    }
}

/// `audit correlate`: the CI job behind each event of an Auth0 log export.
pub async fn correlate_file(
    reader: &AuditReader,
    config: &Config,
    file: &Path,
    json: bool,
) -> anyhow::Result<String> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the log export from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading the log export {}", file.display()))?
    };
    let events = correlate::parse_events(&text).with_context(|| format!("{}", file.display()))?;
    let records: Vec<AuditRecord> = reader
        .records(&AuditFilter::default())
        .await?
        .into_iter()
        .map(|s| s.record)
        .collect();
    let clients: HashMap<String, String> = config
        .targets
        .values()
        .filter_map(|target| match &target.kind {
            TargetKindConfig::Remote(remote) => {
                Some((target.name.clone(), remote.client_id.clone()))
            }
            TargetKindConfig::Local { .. } => None,
        })
        .collect();
    let found = correlate::correlate(&events, &records, &clients);
    Ok(if json {
        let mut out = correlate::render_json(&found);
        out.push('\n');
        out
    } else {
        correlate::render_table(&found)
    })
}

/// "1 record", "2 records".
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A time in the analyst's zone: `2026-12-01 14:03:09`.
fn local_time(time: OffsetDateTime, offset: UtcOffset) -> String {
    let t = time.to_offset(offset);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn offset_label(offset: UtcOffset) -> String {
    if offset == UtcOffset::UTC {
        "UTC".to_owned()
    } else {
        let (h, m, _) = offset.as_hms();
        format!(
            "UTC{}{:02}:{:02}",
            if offset.is_negative() { '-' } else { '+' },
            h.abs(),
            m.abs()
        )
    }
}

/// The workflow without its repository prefix: `.github/workflows/deploy.yml@refs/heads/main`.
fn workflow(record: &AuditRecord) -> String {
    let Some(workflow) = record.workflow_ref.as_deref() else {
        return "-".to_owned();
    };
    match record.repository.as_deref() {
        Some(repo) => workflow
            .strip_prefix(repo)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(workflow)
            .to_owned(),
        None => workflow.to_owned(),
    }
}

/// GitHub's `run_id/attempt`, GitLab's `pipeline/job`.
fn run(record: &AuditRecord) -> String {
    match (
        &record.run_id,
        &record.run_attempt,
        &record.pipeline_id,
        &record.job_id,
    ) {
        (Some(run), Some(attempt), _, _) => format!("{run}/{attempt}"),
        (Some(run), None, _, _) => run.clone(),
        (None, _, Some(pipeline), Some(job)) => format!("{pipeline}/{job}"),
        (None, _, Some(pipeline), None) => pipeline.clone(),
        _ => "-".to_owned(),
    }
}

fn short_sha(record: &AuditRecord) -> String {
    record
        .sha
        .as_deref()
        .map_or_else(|| "-".to_owned(), |sha| sha.chars().take(7).collect())
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

/// Aligned columns: the job first, then the decision.
pub fn render_table(records: &[AuditRecord], offset: UtcOffset) -> String {
    let header = [
        format!("TIME ({})", offset_label(offset)),
        "REPOSITORY".to_owned(),
        "WORKFLOW".to_owned(),
        "RUN".to_owned(),
        "COMMIT".to_owned(),
        "OUTCOME".to_owned(),
        "REASON".to_owned(),
        "POLICY".to_owned(),
        "TARGET".to_owned(),
        "SCOPE".to_owned(),
        "REQUEST".to_owned(),
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                local_time(r.time, offset),
                or_dash(&r.repository),
                workflow(r),
                run(r),
                short_sha(r),
                r.outcome.as_str().to_owned(),
                r.reason.as_str().to_owned(),
                or_dash(&r.policy),
                or_dash(&r.target),
                or_dash(&r.scope),
                r.request_id.clone(),
            ]
            .into_iter()
            .map(|cell| printable(&cell))
            .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (columns, cell) in widths.iter_mut().zip(row) {
            *columns = (*columns).max(width(cell));
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header.to_vec()).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &columns)| padded(cell, columns))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if records.is_empty() {
        out.push_str("(no records)\n");
    }
    out
}

/// A JSON array of records, with every field of the contract.
pub fn render_json(records: &[AuditRecord]) -> anyhow::Result<String> {
    let mut out = serde_json::to_string_pretty(records)?;
    out.push('\n');
    Ok(out)
}

/// The flat fields of a record, in the contract's order, for CSV.
const CSV_FIELDS: &[&str] = &[
    "request_id",
    "time",
    "outcome",
    "reason",
    "policy",
    "policy_sha256",
    "policy_set_version",
    "target",
    "audience",
    "requested_scope",
    "scope",
    "issuer",
    "subject",
    "repository",
    "repository_id",
    "ref",
    "environment",
    "event_name",
    "run_id",
    "run_attempt",
    "sha",
    "actor",
    "workflow_ref",
    "job_workflow_ref",
    "project_id",
    "pipeline_id",
    "job_id",
    "token_sha256",
    "token_jti",
    "expires_at",
    "reused",
    "client_ip",
    "user_agent",
    "would_allow",
    "detail",
];

/// RFC 4180 CSV of the flat fields. A cell that a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@` first) is prefixed with `'`.
pub fn render_csv(records: &[AuditRecord]) -> anyhow::Result<String> {
    let mut out = CSV_FIELDS.join(",");
    out.push_str("\r\n");
    for record in records {
        let value = serde_json::to_value(record)?;
        let cells: Vec<String> = CSV_FIELDS
            .iter()
            .map(|field| csv_cell(&value[*field]))
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    Ok(out)
}

fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Every field of each record, one per line, then the policies condition by condition.
fn render_detail(found: &[StoredRecord], offset: UtcOffset) -> anyhow::Result<String> {
    let mut out = String::new();
    for stored in found {
        let record = &stored.record;
        let _ = writeln!(
            out,
            "record {} of replica {} at {} ({})",
            stored.seq,
            stored.replica,
            local_time(record.time, offset),
            offset_label(offset)
        );
        let value = serde_json::to_value(record)?;
        for field in CSV_FIELDS {
            let cell = &value[*field];
            if cell.is_null() || cell.as_array().is_some_and(Vec::is_empty) {
                continue;
            }
            let text = cell
                .as_str()
                .map_or_else(|| cell.to_string(), str::to_owned);
            let _ = writeln!(out, "  {field:<19} {}", printable(&text));
        }
        for decision in &record.decisions {
            let _ = writeln!(
                out,
                "  policy {:?}: {}",
                decision.policy,
                if decision.allowed {
                    "allows"
                } else {
                    "does not allow"
                }
            );
            for condition in &decision.conditions {
                let _ = writeln!(
                    out,
                    "    {} {}",
                    if condition.passed { "pass" } else { "FAIL" },
                    printable(&condition.describe())
                );
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Parses `--since`/`--until`: a duration back from `now` (`"1h"`, `"7d"`) or an RFC 3339
/// time (`2026-12-01T10:00:00Z`).
pub fn parse_time(text: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    match crate::config::parse_duration(text) {
        Ok(ago) => match time::Duration::try_from(ago)
            .ok()
            .and_then(|ago| now.checked_sub(ago))
        {
            Some(at) => Ok(at),
            None => bail!("{text:?} goes back further than a date can be written"),
        },
        Err(_) => bail!(
            "{text:?} is neither a duration back from now (\"1h\", \"7d\") nor an RFC 3339 time (\"2026-12-01T10:00:00Z\")"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::audit::Reason;

    fn record() -> AuditRecord {
        let mut record = AuditRecord::new(
            "req-1",
            time::macros::datetime!(2026-12-01 10:00:00 UTC),
            Reason::Allowed,
        );
        record.repository = Some("acme/app".to_owned());
        record.workflow_ref =
            Some("acme/app/.github/workflows/deploy.yml@refs/heads/main".to_owned());
        record.run_id = Some("42".to_owned());
        record.run_attempt = Some("1".to_owned());
        record.sha = Some("0123456789abcdef".to_owned());
        record.policy = Some("deploy".to_owned());
        record.target = Some("tenant-prod".to_owned());
        record.scope = Some("read:users".to_owned());
        record
    }

    #[test]
    fn the_table_puts_the_job_first_in_local_time() {
        let offset = UtcOffset::from_hms(1, 0, 0).expect("offset");
        let table = render_table(&[record()], offset);
        assert_eq!(
            table,
            "TIME (UTC+01:00)     REPOSITORY  WORKFLOW                                      RUN   COMMIT   OUTCOME  REASON   POLICY  TARGET       SCOPE       REQUEST\n\
             2026-12-01 11:00:00  acme/app    .github/workflows/deploy.yml@refs/heads/main  42/1  0123456  allow    allowed  deploy  tenant-prod  read:users  req-1\n"
        );
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut record = record();
        record.user_agent = Some("=HYPERLINK(\"x\")".to_owned());
        record.detail = Some("a, b".to_owned());
        let csv = render_csv(&[record]).expect("csv");
        let row = csv.lines().nth(1).expect("a row");
        assert!(row.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{row}");
        assert!(row.ends_with(",\"a, b\""), "{row}");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        let mut record = record();
        record.repository = Some("acme/app\u{1b}[2J\nforged".to_owned());
        let table = render_table(&[record], UtcOffset::UTC);
        assert!(table.contains("acme/app\\u{1b}[2J\\nforged"), "{table}");
        assert_eq!(table.lines().count(), 2);
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = time::macros::datetime!(2026-12-01 10:00:00 UTC);
        assert_eq!(
            parse_time("1h", now).expect("duration"),
            time::macros::datetime!(2026-12-01 09:00:00 UTC)
        );
        assert_eq!(
            parse_time("2026-11-30T00:00:00Z", now).expect("time"),
            time::macros::datetime!(2026-11-30 00:00:00 UTC)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(
            parse_time("9999999999d", now)
                .expect_err("too far back")
                .to_string(),
            "\"9999999999d\" goes back further than a date can be written"
        );
    }
}
