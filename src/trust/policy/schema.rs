//! The JSON Schema (draft 2020-12) of policy files, generated from the types below with
//! schemars and committed as `policies/schema.json`, so editors validate and complete
//! policies (`# yaml-language-server: $schema=...`). A test regenerates it and fails when
//! the committed file differs, and checks that these types name exactly the fields
//! `compile` accepts; loading stays `compile`'s job, which also checks what a schema
//! cannot say (binding claims, known issuers and targets, regexes that compile).

use schemars::JsonSchema;
use serde_json::Value;

/// A policy file: one policy, or a list of policies (each with a `name`).
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum PolicyFile {
    One(Policy),
    List(Vec<Policy>),
}

/// One trust policy: which CI workloads of an issuer may have which scopes on a target.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the schema of these types is used")]
struct Policy {
    /// Unique; defaults to the file stem in a one-policy file, required in a list.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]{0,127}$"), length(max = 128))]
    name: Option<String>,
    /// What the policy is for, for people.
    description: Option<String>,
    /// A key of `[issuers]` in the configuration.
    issuer: String,
    /// A key of `[targets]` in the configuration.
    target: String,
    /// The literal scopes this policy may grant (RFC 6749 scope tokens, no wildcards).
    #[schemars(
        length(min = 1),
        inner(regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$"))
    )]
    scopes: Vec<String>,
    /// Local targets only: the token lifetime (e.g. `10m`), at most the target's `max_ttl`.
    #[schemars(regex(pattern = r"^\s*[0-9]+\s*[a-z]+(\s*[0-9]+\s*[a-z]+)*\s*$"))]
    ttl: Option<String>,
    /// `enforce` grants; `audit` evaluates and records `would_allow`, granting nothing.
    mode: Option<Mode>,
    /// `false` takes the policy out of every decision.
    enabled: Option<bool>,
    /// Allow a policy for a shared issuer without a binding claim (`policy check` warns: TM001).
    unbound: Option<bool>,
    /// Linter findings this policy acknowledges, with the reason.
    lint: Option<LintAllow>,
    /// Every listed claim must match. Pin a binding claim (an immutable id) exactly.
    #[schemars(extend("minProperties" = 1))]
    claims: std::collections::BTreeMap<String, Matcher>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum Mode {
    Enforce,
    Audit,
}

/// `lint: { allow: [TM004], reason: "..." }`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the schema of these types is used")]
struct LintAllow {
    /// Rule ids of `tokenmint policy check` (TM001 to TM016; TM000 cannot be acknowledged).
    #[schemars(length(min = 1), inner(regex(pattern = "^TM0(0[1-9]|1[0-6])$")))]
    allow: Vec<String>,
    /// Why the findings are acceptable.
    #[schemars(length(min = 1))]
    reason: String,
}

/// How a claim must look: exactly a value, any element of a list, a glob, a regex, or
/// `not` another matcher.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum Matcher {
    Exact(Scalar),
    AnyOf(Vec<Element>),
    Pattern(Pattern),
    Not(Not),
}

/// An exact value; numbers and booleans compare as their text.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum Scalar {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

/// An element of a list: an exact value, a glob or a regex.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum Element {
    Exact(Scalar),
    Pattern(Pattern),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum Pattern {
    Glob(Glob),
    Regex(Regex),
}

/// `*` matches within a path segment, `**` across `/`, neither across `:`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the schema of these types is used")]
struct Glob {
    glob: String,
}

/// Anchored as `^(?:R)$`; Rust `regex` syntax, linear time.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the schema of these types is used")]
struct Regex {
    regex: String,
}

/// True only when the claim is present and the operand does not match.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the schema of these types is used")]
struct Not {
    not: NotOperand,
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the schema of these types is used")]
enum NotOperand {
    Exact(Scalar),
    AnyOf(Vec<Element>),
    Pattern(Pattern),
}

/// The schema as committed in `policies/schema.json`.
pub fn policy_file_schema() -> Value {
    let mut schema = schemars::schema_for!(PolicyFile).to_value();
    schema["title"] = Value::from("tokenmint trust policy file");
    schema["description"] = Value::from(
        "One tokenmint trust policy, or a list of policies each with a name. \
         Generated from the Rust types; `tokenmint policy check` checks what a schema cannot.",
    );
    schema
}

/// `policies/schema.json`'s text: the schema, pretty-printed, with a final newline.
pub fn policy_file_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&policy_file_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The property names the schema gives a policy, for the test that keeps them equal to
/// the fields `compile` accepts.
pub fn policy_properties() -> Vec<String> {
    let schema = policy_file_schema();
    schema["$defs"]["Policy"]["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_exactly_the_fields_a_policy_compiles_with() {
        let mut schema = policy_properties();
        schema.sort();
        let mut fields: Vec<String> = super::super::compile::FIELDS
            .iter()
            .map(|field| (*field).to_owned())
            .collect();
        fields.sort();
        assert_eq!(schema, fields);
    }

    #[test]
    fn the_schema_is_draft_2020_12() {
        assert_eq!(
            policy_file_schema()["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
}
