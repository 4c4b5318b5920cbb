//! `tokenmint audit correlate`: reading an Auth0 tenant log export and naming the CI job
//! behind each event by joining it to the audit trail ([`parse_events`], [`correlate`],
//! [`render_json`], [`render_table`]).
//!
//! The joins, strongest first:
//!
//! - a `seccft` event (the tenant issued a client-credentials token) names its request in
//!   its `user_agent`, `tokenmint/{version} (request {request_id})`, and its `client_id`
//!   and `date` agree with that request's target and time: all three are required, as
//!   anyone calling the tenant chooses their user agent;
//! - without that, its `details.access_token_jti` may equal a record's `token_jti` (the
//!   `client_id` and `date` checks that also hold are listed in `joined_by`);
//! - without either (a proxy rewrote the user agent), its `client_id` and `date` may fit
//!   exactly one record of a token the tenant issued to that client that no other event
//!   claims: a weaker join, listed as `client_id+date`;
//! - a `sapi` or `mgmt_api_read` event (the token used) carries the token's id in
//!   `details.request.auth.credentials.jti`: the `details.access_token_jti` of the
//!   `seccft` event that issued it. When that event is in the export and joined, the use
//!   is traced through it; otherwise a record's `token_jti` may equal the id.
//!
//! Every other event, and every event no join reaches, names no job. A request is judged
//! by its latest record (the rule of [`latest_per_request`]). Each step is one pass over
//! the events with hash lookups; the weak join's candidates are sorted by time once.
//!
//! [`latest_per_request`]: crate::trust::audit::latest_per_request

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::edges::terminal_text::{printable, width};
use crate::trust::audit::AuditRecord;

/// How far an event's `date` may be from its request's latest record: clock skew between
/// the tenant and tokenmint, and the call to the tenant itself.
pub const DATE_WINDOW: Duration = Duration::seconds(120);

/// The event type of an issued client-credentials token.
const ISSUED: &str = "seccft";
/// The event types of a Management API call made with a token.
const USED: [&str; 2] = ["sapi", "mgmt_api_read"];

/// `joined_by` entries.
const BY_USER_AGENT: &str = "user_agent.request_id";
const BY_CLIENT_ID: &str = "client_id";
const BY_DATE: &str = "date";
const BY_TOKEN_JTI: &str = "access_token_jti=token_jti";
const BY_WINDOW: &str = "client_id+date";
const BY_ISSUING_EVENT: &str = "credentials.jti=seccft.access_token_jti";
const BY_USED_TOKEN_JTI: &str = "credentials.jti=token_jti";

/// One tenant log event and the CI job behind it (`None` everywhere, and `joined_by`
/// empty, when no tokenmint record was found). `audit correlate --format json` prints
/// these fields in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correlation {
    pub log_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// The event's `date` as the tenant wrote it.
    pub date: Option<String>,
    pub request_id: Option<String>,
    pub repository: Option<String>,
    pub workflow_ref: Option<String>,
    pub run_id: Option<String>,
    pub run_attempt: Option<String>,
    pub sha: Option<String>,
    pub actor: Option<String>,
    pub policy: Option<String>,
    pub target: Option<String>,
    /// How the event was joined to the record, strongest evidence first.
    pub joined_by: Vec<String>,
}

/// Why a log export could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelateError {
    /// A line is not JSON, or not an event (numbered from 1, blank lines counted).
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: String },
    /// An element of a JSON-array export is not an event (numbered from 1).
    #[error("event {index} of the export is {kind}, not an object")]
    NotAnEvent { index: usize, kind: &'static str },
    /// The export is one JSON value that is neither an event nor a list of events.
    #[error("the export is {kind}, not an event or an array of events")]
    NotAnExport { kind: &'static str },
}

/// Reads a tenant log export: a JSON array of events (or one event), or JSON lines (one
/// event, or an array of events, per line; blank lines ignored). An event may come in a
/// log stream's wrapper, `{"log_id": ..., "data": {event}}`, and is then unwrapped.
pub fn parse_events(text: &str) -> Result<Vec<Value>, CorrelateError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = || {
        text.lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty())
    };
    let Some((_, first)) = lines().next() else {
        return Ok(Vec::new());
    };
    // JSON lines when the first line is a whole value; one document (a pretty-printed
    // array, say) otherwise.
    if serde_json::from_str::<serde::de::IgnoredAny>(first).is_ok() {
        return from_lines(lines());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(document) => from_document(document),
        // A JSON-lines export whose first line is broken: name that line, not wherever
        // the parser ran into the second one.
        Err(_) if lines().skip(1).any(|(_, line)| is_object_line(line)) => from_lines(lines()),
        Err(err) => Err(CorrelateError::Line {
            line: err.line(),
            problem: not_json(&err),
        }),
    }
}

fn from_lines<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
) -> Result<Vec<Value>, CorrelateError> {
    let mut events = Vec::new();
    for (line, text) in lines {
        let problem = |problem: String| CorrelateError::Line { line, problem };
        match serde_json::from_str::<Value>(text) {
            Err(err) => return Err(problem(not_json(&err))),
            Ok(Value::Object(event)) => events.push(event_of(event)),
            Ok(Value::Array(items)) => {
                for (index, item) in items.into_iter().enumerate() {
                    match item {
                        Value::Object(event) => events.push(event_of(event)),
                        other => {
                            return Err(problem(format!(
                                "event {} of the line is {}, not an object",
                                index + 1,
                                kind(&other)
                            )));
                        }
                    }
                }
            }
            Ok(other) => return Err(problem(format!("{}, not an event", kind(&other)))),
        }
    }
    Ok(events)
}

fn from_document(document: Value) -> Result<Vec<Value>, CorrelateError> {
    match document {
        Value::Object(event) => Ok(vec![event_of(event)]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::Object(event) => Ok(event_of(event)),
                other => Err(CorrelateError::NotAnEvent {
                    index: index + 1,
                    kind: kind(&other),
                }),
            })
            .collect(),
        other => Err(CorrelateError::NotAnExport { kind: kind(&other) }),
    }
}

fn is_object_line(line: &str) -> bool {
    matches!(serde_json::from_str::<Value>(line), Ok(Value::Object(map)) if !map.is_empty())
}

/// A log stream's `{"log_id", "data": {event}}` as the event (keeping the wrapper's
/// `log_id` if the event lacks one); any other object as it is.
fn event_of(mut object: Map<String, Value>) -> Value {
    if object.contains_key("type") {
        return Value::Object(object);
    }
    let Some(Value::Object(data)) = object.get_mut("data") else {
        return Value::Object(object);
    };
    let mut event = std::mem::take(data);
    if let Some(log_id) = object.remove("log_id") {
        event.entry("log_id").or_insert(log_id);
    }
    Value::Object(event)
}

/// serde_json's message without its position, which is given as the line and column.
fn not_json(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    format!("not JSON: {message} at column {}", err.column())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Joins each event to the audit record of the request behind it. `records` are the
/// store's, in append order; `target_clients` maps each remote target's name to the
/// client id it authenticates as. One [`Correlation`] per event, in the events' order.
pub fn correlate(
    events: &[Value],
    records: &[AuditRecord],
    target_clients: &HashMap<String, String>,
) -> Vec<Correlation> {
    let trail = Trail::new(records, target_clients);
    let is_issue = |event: &Value| text(event, &["type"]) == Some(ISSUED);
    let mut joins: Vec<Option<Join<'_>>> = vec![None; events.len()];

    // The direct joins of issued tokens; the requests they name are taken.
    let mut taken: HashSet<&str> = HashSet::new();
    for (event, join) in events.iter().zip(joins.iter_mut()) {
        if is_issue(event) {
            *join = trail.direct(event);
            if let Some(join) = join {
                taken.insert(&join.record.request_id);
            }
        }
    }

    // The weak join: a record no direct join took, chosen by exactly one event.
    let mut chosen = Vec::new();
    let mut times_chosen: HashMap<&str, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if joins[index].is_none()
            && is_issue(event)
            && let Some(record) = trail.only_one_in_window(event, &taken)
        {
            *times_chosen.entry(&record.request_id).or_default() += 1;
            chosen.push((index, record));
        }
    }
    for (index, record) in chosen {
        if times_chosen.get(record.request_id.as_str()) == Some(&1) {
            joins[index] = Some(Join {
                record,
                by: vec![BY_WINDOW],
            });
        }
    }

    // Uses, through the event that issued the token (the first with its id).
    let mut issuing: HashMap<&str, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if is_issue(event)
            && let Some(jti) = text(event, &["details", "access_token_jti"])
        {
            issuing.entry(jti).or_insert(index);
        }
    }
    for (index, event) in events.iter().enumerate() {
        let is_use = text(event, &["type"]).is_some_and(|kind| USED.contains(&kind));
        let jti = text(event, &["details", "request", "auth", "credentials", "jti"]);
        let (true, Some(jti)) = (is_use, jti) else {
            continue;
        };
        let through_issue = issuing
            .get(jti)
            .and_then(|&issue| joins[issue].as_ref())
            .map(|issue| Join {
                record: issue.record,
                by: [BY_ISSUING_EVENT]
                    .iter()
                    .chain(&issue.by)
                    .copied()
                    .collect(),
            });
        joins[index] = through_issue.or_else(|| {
            let record = trail.by_token_jti(jti)?;
            let mut by = vec![BY_USED_TOKEN_JTI];
            if trail.same_client(event, record) {
                by.push(BY_CLIENT_ID);
            }
            Some(Join { record, by })
        });
    }

    events
        .iter()
        .zip(joins)
        .map(|(event, join)| Correlation::of(event, join.as_ref()))
        .collect()
}

/// An event's record and the evidence for it.
#[derive(Clone)]
struct Join<'a> {
    record: &'a AuditRecord,
    by: Vec<&'static str>,
}

/// The audit records, indexed for the joins.
struct Trail<'a> {
    /// Each request's latest record.
    latest: HashMap<&'a str, &'a AuditRecord>,
    /// `token_jti` → request id.
    token_jtis: HashMap<&'a str, &'a str>,
    /// Client id → the latest records of tokens the tenant issued to it (handed out or
    /// dropped by `doctor`, never reused ones: those made no call), by time.
    issued: HashMap<&'a str, Vec<&'a AuditRecord>>,
    target_clients: &'a HashMap<String, String>,
}

impl<'a> Trail<'a> {
    fn new(records: &'a [AuditRecord], target_clients: &'a HashMap<String, String>) -> Self {
        let mut latest = HashMap::with_capacity(records.len());
        let mut token_jtis = HashMap::new();
        for record in records {
            latest.insert(record.request_id.as_str(), record);
            if let Some(jti) = &record.token_jti {
                token_jtis.insert(jti.as_str(), record.request_id.as_str());
            }
        }
        let mut issued: HashMap<&str, Vec<&AuditRecord>> = HashMap::new();
        for record in latest.values() {
            let client = record.target.as_ref().and_then(|t| target_clients.get(t));
            if let Some(client) = client
                && record.token_sha256.is_some()
                && !record.reused
            {
                issued.entry(client.as_str()).or_default().push(record);
            }
        }
        for records in issued.values_mut() {
            records.sort_unstable_by(|a, b| (a.time, &a.request_id).cmp(&(b.time, &b.request_id)));
        }
        Self {
            latest,
            token_jtis,
            issued,
            target_clients,
        }
    }

    fn by_token_jti(&self, jti: &str) -> Option<&'a AuditRecord> {
        let request_id = self.token_jtis.get(jti)?;
        self.latest.get(request_id).copied()
    }

    /// A `seccft` event's record by the request id in its user agent, else by its token id.
    ///
    /// Security: the user agent is whatever the tenant's caller sent, so anyone holding
    /// some client's credentials can name any request in it. It joins only when the
    /// event's `client_id` is the client of that request's target and its `date` is within
    /// [`DATE_WINDOW`] of the request's latest record: a forged user agent cannot pin
    /// another client's, or another time's, token on a CI job
    /// (`a_user_agent_joins_only_with_its_client_and_date`). The token id is the tenant's
    /// own, not the caller's, and joins alone.
    fn direct(&self, event: &Value) -> Option<Join<'a>> {
        let date_fits = |record: &AuditRecord| {
            date_of(event).is_some_and(|date| (date - record.time).abs() <= DATE_WINDOW)
        };
        let by_user_agent = text(event, &["user_agent"])
            .and_then(request_id_in)
            .and_then(|id| self.latest.get(id).copied())
            .filter(|record| self.same_client(event, record) && date_fits(record))
            .map(|record| Join {
                record,
                by: vec![BY_USER_AGENT, BY_CLIENT_ID, BY_DATE],
            });
        by_user_agent.or_else(|| {
            let record = text(event, &["details", "access_token_jti"])
                .and_then(|jti| self.by_token_jti(jti))?;
            let mut by = vec![BY_TOKEN_JTI];
            if self.same_client(event, record) {
                by.push(BY_CLIENT_ID);
            }
            if date_fits(record) {
                by.push(BY_DATE);
            }
            Some(Join { record, by })
        })
    }

    /// The one record of a token issued to the event's client within [`DATE_WINDOW`] of
    /// its date that is not `taken`; `None` if there is none or more than one.
    fn only_one_in_window(&self, event: &Value, taken: &HashSet<&str>) -> Option<&'a AuditRecord> {
        let issued = self.issued.get(text(event, &["client_id"])?)?;
        let date = date_of(event)?;
        let (from, to) = (
            date.checked_sub(DATE_WINDOW)?,
            date.checked_add(DATE_WINDOW)?,
        );
        let start = issued.partition_point(|record| record.time < from);
        let mut free = issued[start..]
            .iter()
            .take_while(|record| record.time <= to)
            .filter(|record| !taken.contains(record.request_id.as_str()));
        let only = free.next()?;
        free.next().is_none().then_some(*only)
    }

    /// The event's `client_id` is the one the record's target authenticates as.
    fn same_client(&self, event: &Value, record: &AuditRecord) -> bool {
        let expected = record
            .target
            .as_ref()
            .and_then(|t| self.target_clients.get(t));
        expected.is_some_and(|client| text(event, &["client_id"]) == Some(client.as_str()))
    }
}

/// The `{request_id}` of a user agent containing `(request {request_id})`.
fn request_id_in(user_agent: &str) -> Option<&str> {
    let (_, rest) = user_agent.split_once("(request ")?;
    let (id, _) = rest.split_once(')')?;
    (!id.is_empty() && !id.contains(char::is_whitespace)).then_some(id)
}

/// The string at `path` in `event`.
fn text<'v>(event: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter()
        .try_fold(event, |value, name| value.get(name))?
        .as_str()
}

fn date_of(event: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text(event, &["date"])?, &Rfc3339).ok()
}

impl Correlation {
    fn of(event: &Value, join: Option<&Join<'_>>) -> Self {
        let owned = |name: &str| text(event, &[name]).map(str::to_owned);
        let record = join.map(|join| join.record);
        let field = |get: fn(&AuditRecord) -> &Option<String>| record.and_then(|r| get(r).clone());
        Self {
            log_id: owned("log_id"),
            event_type: owned("type"),
            date: owned("date"),
            request_id: record.map(|r| r.request_id.clone()),
            repository: field(|r| &r.repository),
            workflow_ref: field(|r| &r.workflow_ref),
            run_id: field(|r| &r.run_id),
            run_attempt: field(|r| &r.run_attempt),
            sha: field(|r| &r.sha),
            actor: field(|r| &r.actor),
            policy: field(|r| &r.policy),
            target: field(|r| &r.target),
            joined_by: join.map_or_else(Vec::new, |join| {
                join.by.iter().map(|&by| by.to_owned()).collect()
            }),
        }
    }
}

/// `audit correlate --format json`: a pretty-printed JSON array, one object per event.
pub fn render_json(correlations: &[Correlation]) -> String {
    serde_json::to_string_pretty(correlations)
        .expect("a Correlation is strings and lists of strings, which always serialise")
}

/// The table's columns.
const COLUMNS: [&str; 10] = [
    "DATE",
    "TYPE",
    "REPOSITORY",
    "WORKFLOW",
    "RUN",
    "COMMIT",
    "POLICY",
    "TARGET",
    "REQUEST",
    "JOINED BY",
];

/// `audit correlate --format table`: one line per event, aligned. The workflow is shown
/// without its repository, the run as `run_id/attempt`, the commit by its first 7
/// characters; an untraced event shows `-` and says so. Control characters (which a log
/// export or a claim may carry) are shown escaped.
pub fn render_table(correlations: &[Correlation]) -> String {
    let rows: Vec<[String; 10]> = correlations.iter().map(table_row).collect();
    let mut widths = COLUMNS.map(width);
    for row in &rows {
        for (columns, cell) in widths.iter_mut().zip(row) {
            *columns = (*columns).max(width(cell));
        }
    }
    let mut table = String::new();
    for row in std::iter::once(COLUMNS.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (cell, columns) in row.iter().zip(widths) {
            line.push_str(cell);
            let pad = columns.saturating_sub(width(cell)) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

fn table_row(c: &Correlation) -> [String; 10] {
    let shown = |value: Option<&str>| value.map_or_else(|| "-".to_owned(), printable);
    let (date, kind) = (shown(c.date.as_deref()), shown(c.event_type.as_deref()));
    if c.joined_by.is_empty() {
        let none = || "-".to_owned();
        let note = "not a tokenmint token".to_owned();
        return [
            date,
            kind,
            none(),
            none(),
            none(),
            none(),
            none(),
            none(),
            none(),
            note,
        ];
    }
    let workflow = c.workflow_ref.as_deref().map(|workflow| {
        let repository = c.repository.as_deref().unwrap_or_default();
        workflow
            .strip_prefix(repository)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|_| !repository.is_empty())
            .unwrap_or(workflow)
    });
    let run = c.run_id.as_deref().map(|run| match &c.run_attempt {
        Some(attempt) => format!("{run}/{attempt}"),
        None => run.to_owned(),
    });
    let commit = c
        .sha
        .as_deref()
        .map(|sha| sha.chars().take(7).collect::<String>());
    [
        date,
        kind,
        shown(c.repository.as_deref()),
        shown(workflow),
        shown(run.as_deref()),
        shown(commit.as_deref()),
        shown(c.policy.as_deref()),
        shown(c.target.as_deref()),
        shown(c.request_id.as_deref()),
        printable(&c.joined_by.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::trust::audit::Reason;

    const CLIENT: &str = "JhYJVAxTL62lsxTiFDbWYwmZVHuebK9o";
    const ISSUED_AT: &str = "2026-09-15T09:41:09.318Z";

    fn clients() -> HashMap<String, String> {
        HashMap::from([("tenant-prod".to_owned(), CLIENT.to_owned())])
    }

    /// The final record of an allowed request to `tenant-prod` at `time`, for the job of
    /// `tests/data/claims/github-push-main.json` with run `run_id`.
    fn allowed(request_id: &str, time: OffsetDateTime, run_id: &str) -> AuditRecord {
        let mut record = AuditRecord::new(request_id, time, Reason::Allowed);
        record.policy = Some("deploy-tenant".to_owned());
        record.target = Some("tenant-prod".to_owned());
        record.repository = Some("acme/identity-config".to_owned());
        record.workflow_ref =
            Some("acme/identity-config/.github/workflows/deploy.yml@refs/heads/main".to_owned());
        record.run_id = Some(run_id.to_owned());
        record.run_attempt = Some("1".to_owned());
        record.sha = Some("363a0c94e511346808fe5f3d96a84939e49450a3".to_owned());
        record.actor = Some("alice-acme".to_owned());
        record.token_sha256 = Some(format!("{request_id:0>64}"));
        record
    }

    fn pending(record: &AuditRecord, time: OffsetDateTime) -> AuditRecord {
        let mut pending = record.clone();
        (pending.time, pending.reason, pending.outcome) =
            (time, Reason::Pending, Reason::Pending.outcome());
        pending.token_sha256 = None;
        pending
    }

    fn seccft(log_id: &str, user_agent: &str, access_token_jti: &str, date: &str) -> Value {
        json!({"date": date, "type": "seccft", "description": "Client Credentials for Access Token",
            "client_id": CLIENT, "client_name": "tokenmint (tenant-prod)", "user_agent": user_agent,
            "audience": "https://acme.eu.auth0.com/api/v2/",
            "details": {"access_token_jti": access_token_jti, "actions": {"executions": []}},
            "log_id": log_id})
    }

    fn used(log_id: &str, kind: &str, jti: &str) -> Value {
        json!({"date": "2026-09-15T09:41:50.904Z", "type": kind, "description": "Update a client",
            "client_id": CLIENT, "user_agent": "node-auth0/4.27.0",
            "details": {"request": {"method": "patch", "path": "/api/v2/clients/E9eao",
                "auth": {"user": {}, "strategy": "jwt", "credentials": {"jti": jti}}},
                "response": {"statusCode": 200}},
            "log_id": log_id})
    }

    fn agent(request_id: &str) -> String {
        format!("tokenmint/0.3.1 (request {request_id})")
    }

    fn joined(correlations: &[Correlation]) -> Vec<(Option<&str>, Vec<&str>)> {
        correlations
            .iter()
            .map(|c| {
                let by = c.joined_by.iter().map(String::as_str).collect();
                (c.request_id.as_deref(), by)
            })
            .collect()
    }

    #[test]
    fn json_arrays_json_lines_and_log_stream_wrappers_are_read() {
        let one = json!({"type": "seccft", "log_id": "1"});
        let two = json!({"type": "sapi", "log_id": "2"});
        let array = serde_json::to_string_pretty(&json!([one, two])).expect("JSON");
        assert_eq!(parse_events(&array), Ok(vec![one.clone(), two.clone()]));

        let lines = format!("{one}\r\n\n   \n{two}\n");
        assert_eq!(parse_events(&lines), Ok(vec![one.clone(), two.clone()]));

        // A log stream's wrapper, and a line that is a batch (a stream's "JSON array" body).
        let wrapped = json!({"log_id": "1", "data": {"type": "seccft"}});
        let batch = json!([{"log_id": "2", "data": {"type": "sapi", "log_id": "2"}}]);
        let lines = format!("{wrapped}\n{batch}\n");
        assert_eq!(parse_events(&lines), Ok(vec![one.clone(), two]));

        // One pretty-printed event, as the fixtures are, and nothing at all.
        let fixture = include_str!("../../tests/data/auth0/log-seccft.json");
        let events = parse_events(fixture).expect("the fixture");
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0]["details"]["access_token_jti"],
            "41a00725f0ac5412b8fdca10dc74bfde"
        );
        assert_eq!(parse_events(" \n\n"), Ok(Vec::new()));
    }

    #[test]
    fn a_malformed_export_is_refused_naming_the_line() {
        let error = |text: &str| parse_events(text).expect_err(text).to_string();
        let good = r#"{"type": "seccft"}"#;
        assert_eq!(
            error(&format!("{good}\n\n{{\"type\": \"sapi\"\n{good}\n")),
            "line 3: not JSON: EOF while parsing an object at column 15"
        );
        assert_eq!(
            error(&format!("{{\"type\": \"seccft\",\n{good}\n")),
            "line 1: not JSON: EOF while parsing a value at column 18"
        );
        assert_eq!(
            error(&format!("{good}\n42\n")),
            "line 2: a number, not an event"
        );
        assert_eq!(
            error(&format!("{good}\n[{good}, \"x\"]\n")),
            "line 2: event 2 of the line is a string, not an object"
        );
        assert_eq!(
            error("[\n  {\"type\": \"seccft\"},\n  {\"type\": \n]\n"),
            "line 4: not JSON: expected value at column 1"
        );
        assert_eq!(
            error("[\n  {\"type\": \"seccft\"},\n  null\n]"),
            "event 2 of the export is null, not an object"
        );
        assert_eq!(error("\"seccft\"\n"), "line 1: a string, not an event");
        assert_eq!(
            error("\n  \"seccft\"  \n  \n"),
            "line 2: a string, not an event"
        );
    }

    #[test]
    fn a_user_agent_joins_only_with_its_client_and_date() {
        let record = allowed("r-1", datetime!(2026-09-15 09:41:10.002 UTC), "111");
        let mut by_jti = allowed("r-2", datetime!(2026-09-15 09:41:10.500 UTC), "222");
        by_jti.token_jti = Some("j-of-r-2".to_owned());
        // The pending record is far from the date: the latest record is the one judged.
        let records = [
            pending(&record, datetime!(2026-09-15 09:37:00 UTC)),
            record,
            by_jti,
        ];
        // Somebody else's client, naming r-1 in its user agent.
        let mut stranger = seccft("2", &agent("r-1"), "j2", ISSUED_AT);
        stranger["client_id"] = json!("someone-else");
        // The right client, an hour after r-1.
        let late = seccft("5", &agent("r-1"), "j5", "2026-09-15T10:41:09.318Z");
        // A user agent naming r-1 on another client's event whose token id is r-2's.
        let mut forged = seccft("6", &agent("r-1"), "j-of-r-2", ISSUED_AT);
        forged["client_id"] = json!("someone-else");
        let events = [
            seccft("1", &agent("r-1"), "j1", ISSUED_AT),
            stranger,
            // A request id no record has, and none at all.
            seccft("3", &agent("r-9"), "j3", ISSUED_AT),
            seccft("4", "tokenmint/0.3.1 (request )", "j4", ISSUED_AT),
            late,
            forged,
        ];

        let correlations = correlate(&events, &records, &clients());
        assert_eq!(
            joined(&correlations),
            [
                (Some("r-1"), vec![BY_USER_AGENT, BY_CLIENT_ID, BY_DATE]),
                (None, vec![]),
                (None, vec![]),
                (None, vec![]),
                (None, vec![]),
                (Some("r-2"), vec![BY_TOKEN_JTI, BY_DATE]),
            ]
        );
        assert_eq!(correlations[0].run_id.as_deref(), Some("111"));
        assert_eq!(
            request_id_in("tokenmint/0.3.1 (request doctor-8f3e)"),
            Some("doctor-8f3e")
        );
        assert_eq!(request_id_in("tokenmint/0.3.1 (request a b)"), None);
        assert_eq!(request_id_in("tokenmint/0.3.1 (request r-1"), None);
    }

    #[test]
    fn without_the_user_agent_the_token_id_or_the_only_record_in_the_window_joins() {
        let mut by_jti = allowed("r-jti", datetime!(2026-09-15 08:00:00 UTC), "100");
        by_jti.token_jti = Some("41a00725f0ac5412b8fdca10dc74bfde".to_owned());
        let near = |id: &str, secs: i64| {
            let time = datetime!(2026-09-15 09:41:09 UTC) + Duration::seconds(secs);
            allowed(id, time, id)
        };
        let mut reused = near("r-reused", 1);
        reused.reused = true;
        let mut denied = AuditRecord::new(
            "r-denied",
            datetime!(2026-09-15 09:41:09 UTC),
            Reason::NoPolicyMatched,
        );
        denied.target = Some("tenant-prod".to_owned());
        let records = [
            by_jti,
            near("r-a", -100),
            near("r-b", 30),
            reused,
            denied,
            near("r-far", 400),
        ];
        // The fixture's own event: a user agent without the request.
        let fixture = include_str!("../../tests/data/auth0/log-seccft.json");
        let fixture = parse_events(fixture).expect("fixture").remove(0);
        let altered = "tokenmint/0.3.1";
        let events = [
            fixture,
            // r-a and r-b are in its window; the next event takes r-a.
            seccft("2", altered, "j2", ISSUED_AT),
            seccft("3", &agent("r-a"), "j3", ISSUED_AT),
        ];
        assert_eq!(
            joined(&correlate(&events, &records, &clients())),
            [
                (Some("r-jti"), vec![BY_TOKEN_JTI, BY_CLIENT_ID]),
                (Some("r-b"), vec![BY_WINDOW]),
                (Some("r-a"), vec![BY_USER_AGENT, BY_CLIENT_ID, BY_DATE]),
            ]
        );

        // Two free records in the window, or two events for the one free record: no join.
        let ambiguous = [seccft("2", altered, "j2", ISSUED_AT)];
        let twice = [
            seccft("2", altered, "j2", ISSUED_AT),
            seccft("3", altered, "j3", "2026-09-15T09:41:39Z"),
            seccft("4", &agent("r-a"), "j4", ISSUED_AT),
        ];
        let untraced = (None, vec![]);
        assert_eq!(
            joined(&correlate(&ambiguous, &records, &clients())),
            std::slice::from_ref(&untraced)
        );
        assert_eq!(
            joined(&correlate(&twice, &records, &clients()))[..2],
            [untraced.clone(), untraced.clone()]
        );
        // Another client, or a date that is not RFC 3339.
        let mut other = seccft("5", altered, "j5", ISSUED_AT);
        other["client_id"] = json!("someone-else");
        let undated = seccft("6", altered, "j6", "yesterday");
        let records = [near("r-only", 0)];
        assert_eq!(
            joined(&correlate(&[other, undated], &records, &clients())),
            [untraced.clone(), untraced]
        );
    }

    #[test]
    fn a_management_api_event_is_traced_through_the_seccft_that_issued_its_token() {
        let mut local = allowed("r-2", datetime!(2026-09-15 09:00:00 UTC), "222");
        local.token_jti = Some("tm-jti".to_owned());
        let records = [
            allowed("r-1", datetime!(2026-09-15 09:41:10 UTC), "111"),
            local,
        ];
        let events = [
            used("1", "sapi", "jti-1"),
            seccft("2", &agent("r-1"), "jti-1", ISSUED_AT),
            used("3", "mgmt_api_read", "jti-1"),
            used("4", "sapi", "tm-jti"),
            used("5", "sapi", "unknown"),
        ];
        let through = vec![BY_ISSUING_EVENT, BY_USER_AGENT, BY_CLIENT_ID, BY_DATE];
        assert_eq!(
            joined(&correlate(&events, &records, &clients())),
            [
                (Some("r-1"), through.clone()),
                (Some("r-1"), vec![BY_USER_AGENT, BY_CLIENT_ID, BY_DATE]),
                (Some("r-1"), through),
                (Some("r-2"), vec![BY_USED_TOKEN_JTI, BY_CLIENT_ID]),
                (None, vec![]),
            ]
        );
    }

    #[test]
    fn other_events_name_no_job() {
        let records = [allowed("r-1", datetime!(2026-09-15 09:41:10 UTC), "111")];
        let mut dashboard = used("3", "sapi", "0000000000ecaf1bfbadb06900d22049");
        dashboard["details"]["request"]["auth"]["user"] = json!({"email": "ops@acme.example"});
        let events = [
            json!({"type": "s", "date": ISSUED_AT, "user_agent": agent("r-1"), "log_id": "1"}),
            json!({"type": "feccft", "date": ISSUED_AT, "user_agent": agent("r-1"),
                "client_id": CLIENT, "log_id": "2"}),
            dashboard,
            json!({"no": "type"}),
        ];
        let correlations = correlate(&events, &records, &clients());
        assert!(
            correlations
                .iter()
                .all(|c| c.request_id.is_none() && c.joined_by.is_empty())
        );
        assert_eq!(correlations[3].event_type, None);
    }

    fn traced_and_untraced() -> Vec<Correlation> {
        let records = [allowed(
            "r-1",
            datetime!(2026-09-15 09:41:10 UTC),
            "29223225591",
        )];
        let events = [
            seccft(
                "90020260915094109939880000000000000001223372037966911159",
                &agent("r-1"),
                "j",
                ISSUED_AT,
            ),
            json!({"date": "2026-09-15T09:42:00.000Z", "type": "s", "log_id": "9002"}),
        ];
        correlate(&events, &records, &clients())
    }

    #[test]
    fn json_output_is_one_object_per_event_in_the_contract_order() {
        let expected = r#"[
  {
    "log_id": "90020260915094109939880000000000000001223372037966911159",
    "type": "seccft",
    "date": "2026-09-15T09:41:09.318Z",
    "request_id": "r-1",
    "repository": "acme/identity-config",
    "workflow_ref": "acme/identity-config/.github/workflows/deploy.yml@refs/heads/main",
    "run_id": "29223225591",
    "run_attempt": "1",
    "sha": "363a0c94e511346808fe5f3d96a84939e49450a3",
    "actor": "alice-acme",
    "policy": "deploy-tenant",
    "target": "tenant-prod",
    "joined_by": [
      "user_agent.request_id",
      "client_id",
      "date"
    ]
  },
  {
    "log_id": "9002",
    "type": "s",
    "date": "2026-09-15T09:42:00.000Z",
    "request_id": null,
    "repository": null,
    "workflow_ref": null,
    "run_id": null,
    "run_attempt": null,
    "sha": null,
    "actor": null,
    "policy": null,
    "target": null,
    "joined_by": []
  }
]"#;
        assert_eq!(render_json(&traced_and_untraced()), expected);
        assert_eq!(render_json(&[]), "[]");
    }

    #[test]
    fn the_table_shows_the_job_then_the_join_and_marks_untraced_events() {
        let mut correlations = traced_and_untraced();
        correlations[0].policy = Some("deploy\u{1b}[2J\ntenant".to_owned());
        let expected = "\
DATE                      TYPE    REPOSITORY            WORKFLOW                                      RUN            COMMIT   POLICY                   TARGET       REQUEST  JOINED BY
2026-09-15T09:41:09.318Z  seccft  acme/identity-config  .github/workflows/deploy.yml@refs/heads/main  29223225591/1  363a0c9  deploy\\u{1b}[2J\\ntenant  tenant-prod  r-1      user_agent.request_id, client_id, date
2026-09-15T09:42:00.000Z  s       -                     -                                             -              -        -                        -            -        not a tokenmint token
";
        assert_eq!(render_table(&correlations), expected);
    }
}
