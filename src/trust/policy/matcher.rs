//! Claim matchers: compiling a condition's YAML (exact, list, `glob`, `regex`, `not`)
//! once at load, matching it against a claim's JSON value, and rendering it for people.
//!
//! The rules here are the policy language's type and absence semantics: an absent or
//! null claim matches nothing (`not` included); on an array claim a matcher is true when
//! it matches some element and `not` when its operand matches no element; objects never
//! match; booleans compare as `true`/`false`; integers with |n| <= 2^53 compare as their
//! decimal text; any other number never matches.

use std::borrow::Cow;

use marked_yaml::Node;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::source::{self, Diagnostics};

/// The compiled-program size limit of every glob and regex (1 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The largest integer that compares as text: beyond it, JSON numbers lose precision.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// A compiled matcher for one claim.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The claim's text equals this string.
    Exact(String),
    /// Any element matches (elements are `Exact`, `Glob` or `Regex`).
    AnyOf(Vec<Matcher>),
    /// A glob: `*` within a path segment, `**` across `/`, never across `:`.
    Glob(Pattern),
    /// A regex, anchored as `^(?:R)$`.
    Regex(Pattern),
    /// True only when the claim is present and the operand is false.
    Not(Box<Matcher>),
}

/// A glob or regex as written in the policy, with its compiled, anchored form.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// The pattern as written in the policy.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl Matcher {
    /// Whether a claim value satisfies this matcher; `None` is an absent claim.
    pub fn matches(&self, claim: Option<&Value>) -> bool {
        let Some(value) = claim else {
            return false;
        };
        match value {
            Value::Array(items) => {
                let mut texts = items.iter().filter_map(scalar_text);
                match self {
                    Matcher::Not(inner) => !texts.any(|text| inner.matches_text(&text)),
                    positive => texts.any(|text| positive.matches_text(&text)),
                }
            }
            // Null, objects, floats and integers beyond 2^53 have no text: nothing
            // matches them, `not` included.
            scalar => scalar_text(scalar).is_some_and(|text| self.matches_text(&text)),
        }
    }

    fn matches_text(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(expected) => expected == text,
            Matcher::AnyOf(options) => options.iter().any(|option| option.matches_text(text)),
            Matcher::Glob(pattern) | Matcher::Regex(pattern) => pattern.is_match(text),
            Matcher::Not(inner) => !inner.matches_text(text),
        }
    }

    /// The matcher as people read it: `"main"`, `one of ["a", "b"]`, `glob "x/*"`,
    /// `regex "v[0-9]+"`, `not "x"`. Strings are JSON-quoted.
    pub fn expected(&self) -> String {
        match self {
            Matcher::Exact(value) => quote(value),
            Matcher::AnyOf(options) => {
                let rendered: Vec<String> = options.iter().map(Matcher::expected).collect();
                format!("one of [{}]", rendered.join(", "))
            }
            Matcher::Glob(pattern) => format!("glob {}", quote(&pattern.source)),
            Matcher::Regex(pattern) => format!("regex {}", quote(&pattern.source)),
            Matcher::Not(inner) => format!("not {}", inner.expected()),
        }
    }

    /// The values an exact string or a list of only exact strings pins the claim to;
    /// `None` for any other matcher. This is what makes a condition *binding*.
    pub fn exact_values(&self) -> Option<Vec<&str>> {
        match self {
            Matcher::Exact(value) => Some(vec![value.as_str()]),
            Matcher::AnyOf(options) => options
                .iter()
                .map(|option| match option {
                    Matcher::Exact(value) => Some(value.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// Whether `value` is named literally: the exact string, or an exact element of a
    /// list. Patterns and `not` never name anything literally.
    pub fn lists_exactly(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(exact) => exact == value,
            Matcher::AnyOf(options) => options
                .iter()
                .any(|option| matches!(option, Matcher::Exact(exact) if exact == value)),
            _ => false,
        }
    }
}

/// A JSON value's text for matching: strings as they are, booleans as `true`/`false`,
/// integers with |n| <= 2^53 in decimal. Everything else has no text and never matches.
pub(crate) fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text.as_str())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                (int.unsigned_abs() <= MAX_EXACT_INTEGER).then(|| Cow::Owned(int.to_string()))
            } else if let Some(uint) = number.as_u64() {
                (uint <= MAX_EXACT_INTEGER).then(|| Cow::Owned(uint.to_string()))
            } else {
                None
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Every text a claim offers to matching: its own, or its elements' when it is an array.
pub(crate) fn claim_texts(value: &Value) -> Vec<Cow<'_, str>> {
    match value {
        Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
        scalar => scalar_text(scalar).into_iter().collect(),
    }
}

/// A string as a JSON string literal.
pub(crate) fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Condition,
    ListElement,
    NotOperand,
}

/// Compiles the matcher of the condition at `field` (e.g. `claims.ref`).
pub(crate) fn compile(node: &Node, field: &str, diag: &mut Diagnostics) -> Option<Matcher> {
    compile_at(node, field, Place::Condition, diag)
}

fn compile_at(node: &Node, field: &str, place: Place, diag: &mut Diagnostics) -> Option<Matcher> {
    let line = source::line_of(node);
    match node {
        Node::Scalar(scalar) if source::is_null(scalar) => {
            diag.push(
                line,
                field,
                "a null matcher is not allowed (a null claim never matches); quote the value if you mean the text",
            );
            None
        }
        Node::Scalar(scalar) => Some(Matcher::Exact(scalar.as_str().to_owned())),
        Node::Sequence(_) if place == Place::ListElement => {
            diag.push(line, field, "lists cannot be nested");
            None
        }
        Node::Sequence(items) if items.is_empty() => {
            diag.push(
                line,
                field,
                "an empty list matches nothing; list at least one value",
            );
            None
        }
        Node::Sequence(items) => {
            let before = diag.count();
            let options: Vec<Matcher> = items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    compile_at(item, &format!("{field}[{index}]"), Place::ListElement, diag)
                })
                .collect();
            (diag.count() == before).then_some(Matcher::AnyOf(options))
        }
        Node::Mapping(map) => {
            let mut entries = map.iter();
            let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                diag.push(
                    line,
                    field,
                    "a matcher mapping has exactly one key: glob, regex or not",
                );
                return None;
            };
            let key_field = format!("{field}.{}", key.as_str());
            match key.as_str() {
                "glob" => {
                    let pattern = source::string(value, &key_field, diag)?;
                    match compile_glob(&pattern) {
                        Ok(regex) => Some(Matcher::Glob(Pattern {
                            source: pattern,
                            regex,
                        })),
                        Err(message) => {
                            diag.push(source::line_of(value), &key_field, message);
                            None
                        }
                    }
                }
                "regex" => {
                    let pattern = source::string(value, &key_field, diag)?;
                    match compile_regex(&pattern) {
                        Ok(regex) => Some(Matcher::Regex(Pattern {
                            source: pattern,
                            regex,
                        })),
                        Err(message) => {
                            diag.push(source::line_of(value), &key_field, message);
                            None
                        }
                    }
                }
                "not" => match place {
                    Place::ListElement => {
                        diag.push(
                            line,
                            &key_field,
                            "`not` cannot be a list element; write `not: [a, b]` for \"none of\"",
                        );
                        None
                    }
                    Place::NotOperand => {
                        diag.push(line, &key_field, "`not` cannot be nested");
                        None
                    }
                    Place::Condition => compile_at(value, &key_field, Place::NotOperand, diag)
                        .map(|inner| Matcher::Not(Box::new(inner))),
                },
                other => {
                    diag.push(
                        source::key_line(key),
                        &key_field,
                        format!("unknown matcher {}; use glob, regex or not", quote(other)),
                    );
                    None
                }
            }
        }
    }
}

fn build_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|err| match err {
            regex::Error::Syntax(text) => text
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(text.as_str())
                .to_owned(),
            regex::Error::CompiledTooBig(limit) => {
                format!("the compiled pattern exceeds the size limit of {limit} bytes")
            }
            other => other.to_string(),
        })
}

/// Compiles a policy regex: it must compile on its own (so `a)|(b` cannot escape the
/// anchoring group), then is anchored as `^(?:R)$`.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    build_regex(pattern).map_err(|err| format!("regex does not compile: {err}"))?;
    build_regex(&format!("^(?:{pattern})$"))
        .map_err(|err| format!("regex does not compile once anchored as ^(?:R)$: {err}"))
}

/// Translates a glob into an anchored regex: `*` is `[^/:]*`, `**` is `[^:]*`, `\*`
/// and `\\` are literal, every other character is literal.
fn compile_glob(pattern: &str) -> Result<Regex, String> {
    let mut translated = String::from("^(?:");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('*' | '\\')) => {
                    translated.push_str(&regex::escape(escaped.encode_utf8(&mut [0; 4])));
                }
                Some(other) => {
                    return Err(format!(
                        "`\\{other}` is not an escape; in a glob only `\\*` and `\\\\` are"
                    ));
                }
                None => return Err("the glob ends with a lone `\\`".to_owned()),
            },
            '*' => {
                let mut run = 1;
                while chars.next_if_eq(&'*').is_some() {
                    run += 1;
                }
                match run {
                    1 => translated.push_str("[^/:]*"),
                    2 => translated.push_str("[^:]*"),
                    _ => {
                        return Err(format!(
                            "{run} consecutive `*`: use `*` (within a path segment) or `**` (across `/`)"
                        ));
                    }
                }
            }
            literal => translated.push_str(&regex::escape(literal.encode_utf8(&mut [0; 4]))),
        }
    }
    translated.push_str(")$");
    build_regex(&translated).map_err(|err| format!("glob does not compile: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Compiles the matcher of `claims.x` from YAML text.
    fn try_matcher(yaml: &str) -> Result<Matcher, Vec<super::super::PolicyError>> {
        let text = format!("x: {yaml}\n");
        let mut diag = Diagnostics::new("p.yaml", &text);
        let node = marked_yaml::parse_yaml_with_options(
            0,
            &text,
            marked_yaml::LoaderOptions::default().prevent_coercion(true),
        )
        .expect("test YAML parses");
        let map = node.as_mapping().expect("a mapping");
        let value = map.get_node("x").expect("x present");
        match compile(value, "claims.x", &mut diag) {
            Some(matcher) if diag.is_empty() => Ok(matcher),
            _ => Err(diag.into_errors()),
        }
    }

    fn matcher(yaml: &str) -> Matcher {
        try_matcher(yaml).unwrap_or_else(|errors| panic!("{yaml}: {errors:?}"))
    }

    fn error(yaml: &str) -> String {
        match try_matcher(yaml) {
            Ok(m) => panic!("{yaml} compiled to {m:?}"),
            Err(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn hit(m: &Matcher, value: Value) -> bool {
        m.matches(Some(&value))
    }

    #[test]
    fn absent_and_null_claims_match_nothing_not_included() {
        for yaml in [
            "main",
            "[a, b]",
            "{glob: '**'}",
            "{regex: '.*'}",
            "{not: main}",
        ] {
            let m = matcher(yaml);
            assert!(!m.matches(None), "{yaml} matched an absent claim");
            assert!(!hit(&m, Value::Null), "{yaml} matched null");
        }
    }

    #[test]
    fn exact_compares_the_scalar_text() {
        let m = matcher("89012345");
        assert!(hit(&m, json!("89012345")));
        assert!(hit(&m, json!(89012345)));
        assert!(!hit(&m, json!("890123456")));
        assert!(
            hit(&matcher("\"89012345\""), json!("89012345")),
            "quoted and plain are the same string"
        );
        let t = matcher("true");
        assert!(hit(&t, json!(true)));
        assert!(hit(&t, json!("true")));
        assert!(!hit(&t, json!(false)));
        assert!(hit(&matcher("'false'"), json!(false)));
        assert!(!hit(&matcher("main"), json!("Main")), "case-sensitive");
    }

    #[test]
    fn integers_up_to_2_pow_53_compare_as_text_other_numbers_never() {
        let max = matcher("9007199254740992");
        assert!(hit(&max, json!(9_007_199_254_740_992_u64)));
        assert!(hit(
            &matcher("-9007199254740992"),
            json!(-9_007_199_254_740_992_i64)
        ));
        let beyond = matcher("9007199254740993");
        assert!(!hit(&beyond, json!(9_007_199_254_740_993_u64)));
        assert!(
            !hit(&matcher("{not: '1'}"), json!(9_007_199_254_740_993_u64)),
            "not never matches an unrepresentable number"
        );
        assert!(!hit(&matcher("'12.5'"), json!(12.5)));
        assert!(
            !hit(&matcher("'12'"), json!(12.0)),
            "a float is never an integer"
        );
        assert!(!hit(&matcher("{not: x}"), json!(12.5)));
        assert!(hit(&matcher("'12'"), json!(12)));
    }

    #[test]
    fn objects_never_match_not_included() {
        let object = json!({"a": "b"});
        for yaml in [
            "main",
            "{glob: '**'}",
            "{regex: '.*'}",
            "{not: main}",
            "[a, b]",
        ] {
            assert!(!hit(&matcher(yaml), object.clone()), "{yaml}");
        }
    }

    #[test]
    fn arrays_match_when_some_element_matches_and_not_when_none_does() {
        let groups = json!(["dev", "deployers"]);
        assert!(hit(&matcher("deployers"), groups.clone()));
        assert!(!hit(&matcher("admins"), groups.clone()));
        assert!(hit(&matcher("{glob: 'dep*'}"), groups.clone()));
        assert!(hit(&matcher("{not: admins}"), groups.clone()));
        assert!(!hit(&matcher("{not: dev}"), groups.clone()));
        assert!(!hit(&matcher("{not: [x, deployers]}"), groups.clone()));
        assert!(hit(&matcher("{not: [x, y]}"), groups));
        // Elements that are objects, arrays or floats never match.
        let odd = json!([{"a": "b"}, ["c"], 1.5, null, 7, true]);
        assert!(!hit(&matcher("c"), odd.clone()));
        assert!(!hit(&matcher("'1.5'"), odd.clone()));
        assert!(hit(&matcher("'7'"), odd.clone()));
        assert!(hit(&matcher("'true'"), odd.clone()));
        assert!(!hit(&matcher("{regex: '.*'}"), json!([{"a": "b"}, 1.5])));
        assert!(!hit(&matcher("x"), json!([])));
    }

    #[test]
    fn lists_match_any_element_and_may_hold_patterns() {
        let m = matcher("[push, workflow_dispatch, {glob: 'release-*'}]");
        assert!(hit(&m, json!("push")));
        assert!(hit(&m, json!("workflow_dispatch")));
        assert!(hit(&m, json!("release-1")));
        assert!(!hit(&m, json!("pull_request")));
        assert!(error("[]").contains("empty list"));
        assert!(error("[a, [b]]").contains("claims.x[1]: lists cannot be nested"));
        assert!(error("[a, {not: b}]").contains("cannot be a list element"));
    }

    #[test]
    fn glob_star_stays_within_slash_and_colon() {
        let m = matcher("{glob: 'acme/*'}");
        assert!(hit(&m, json!("acme/identity-config")));
        assert!(hit(&m, json!("acme/")));
        assert!(!hit(&m, json!("acme/a/b")));
        assert!(!hit(&m, json!("acme/a:b")));
        assert!(!hit(&m, json!("xacme/a")), "anchored at the start");
        let ref_glob =
            matcher("{glob: 'acme/identity-config/.github/workflows/*.yml@refs/heads/main'}");
        assert!(hit(
            &ref_glob,
            json!("acme/identity-config/.github/workflows/deploy.yml@refs/heads/main")
        ));
        assert!(!hit(
            &ref_glob,
            json!("acme/identity-config/.github/workflows/deploy.yml@refs/heads/main2")
        ));
        assert!(!hit(
            &ref_glob,
            json!("acme/identity-config/.github/workflowsXdeploy.yml@refs/heads/main")
        ));
    }

    #[test]
    fn glob_double_star_crosses_slash_but_not_colon() {
        let m = matcher("{glob: 'repo:acme/**'}");
        assert!(hit(&m, json!("repo:acme/identity-config")));
        assert!(hit(&m, json!("repo:acme/a/b/c")));
        assert!(!hit(
            &m,
            json!("repo:acme/identity-config:ref:refs/heads/main")
        ));
        assert!(hit(&matcher("{glob: '**'}"), json!("")));
    }

    #[test]
    fn glob_escapes_and_literal_characters() {
        let m = matcher(r"{glob: 'a\*b\\c.d?[x]'}");
        assert!(hit(&m, json!(r"a*b\c.d?[x]")));
        assert!(!hit(&m, json!(r"aXb\c.d?[x]")));
        assert!(!hit(&m, json!(r"a*b\cXd?[x]")), ". is literal");
        assert!(!hit(&m, json!(r"a*b\c.dX[x]")), "? is literal");
        let escaped_then_star = matcher(r"{glob: 'v\**'}");
        assert!(hit(&escaped_then_star, json!("v*1")));
        assert!(!hit(&escaped_then_star, json!("v1")));
        assert!(error(r"{glob: 'a\b'}").contains("is not an escape"));
        assert!(error(r"{glob: 'ab\'}").contains("lone"));
        assert!(error("{glob: 'a/***'}").contains("3 consecutive `*`"));
        assert!(error("{glob: 'a/***'}").starts_with("p.yaml:1: claims.x.glob: "));
    }

    #[test]
    fn regex_is_anchored_as_a_group() {
        let m = matcher("{regex: 'a|b'}");
        assert!(hit(&m, json!("a")));
        assert!(hit(&m, json!("b")));
        assert!(!hit(&m, json!("xa")));
        assert!(!hit(&m, json!("bx")));
        assert!(!hit(&m, json!("ab")));
        let tag =
            matcher(r"{regex: 'acme/shared/\.github/workflows/deploy\.yml@refs/tags/v[0-9]+'}");
        assert!(hit(
            &tag,
            json!("acme/shared/.github/workflows/deploy.yml@refs/tags/v12")
        ));
        assert!(!hit(
            &tag,
            json!("acme/shared/.github/workflows/deploy.yml@refs/tags/v12-rc")
        ));
    }

    #[test]
    fn regex_must_compile_alone() {
        let message = error("{regex: 'a)|(b'}");
        assert!(
            message.starts_with("p.yaml:1: claims.x.regex: regex does not compile: "),
            "{message}"
        );
        assert!(message.contains("unopened group"), "{message}");
        assert!(error("{regex: '(?x)a#'}").contains("once anchored"));
    }

    #[test]
    fn regex_is_case_sensitive_unless_it_says_so() {
        assert!(!hit(&matcher("{regex: 'main'}"), json!("MAIN")));
        assert!(hit(&matcher("{regex: '(?i)main'}"), json!("MAIN")));
    }

    #[test]
    fn regex_size_limit_is_enforced() {
        let message = error("{regex: '(\\w{100}){100}'}");
        assert!(message.contains("size limit"), "{message}");
    }

    #[test]
    fn not_is_true_only_for_a_present_claim_that_does_not_match() {
        let m = matcher("{not: refs/heads/main}");
        assert!(hit(&m, json!("refs/heads/dev")));
        assert!(!hit(&m, json!("refs/heads/main")));
        assert!(!m.matches(None));
        let none_of = matcher("{not: [push, {glob: 'pull_*'}]}");
        assert!(hit(&none_of, json!("schedule")));
        assert!(!hit(&none_of, json!("pull_request")));
        assert!(error("{not: {not: a}}").contains("cannot be nested"));
    }

    #[test]
    fn malformed_matchers_are_load_errors() {
        assert!(error("").contains("null matcher"));
        assert!(error("~").contains("null matcher"));
        assert!(hit(&matcher("'~'"), json!("~")));
        assert!(hit(&matcher("''"), json!("")));
        assert!(error("{}").contains("exactly one key"));
        assert!(error("{glob: a, regex: b}").contains("exactly one key"));
        assert!(error("{prefix: a}").contains("unknown matcher \"prefix\""));
        assert!(error("{glob: [a]}").contains("expected a string, found a list"));
    }

    #[test]
    fn expected_renders_each_matcher() {
        assert_eq!(matcher("refs/heads/main").expected(), "\"refs/heads/main\"");
        assert_eq!(
            matcher("[push, workflow_dispatch]").expected(),
            "one of [\"push\", \"workflow_dispatch\"]"
        );
        assert_eq!(matcher("{glob: 'acme/*'}").expected(), "glob \"acme/*\"");
        assert_eq!(
            matcher("{regex: 'v[0-9]+'}").expected(),
            "regex \"v[0-9]+\""
        );
        assert_eq!(matcher("{not: main}").expected(), "not \"main\"");
        assert_eq!(
            matcher("{not: [a, {glob: 'b*'}]}").expected(),
            "not one of [\"a\", glob \"b*\"]"
        );
    }

    #[test]
    fn exact_values_are_only_exact_strings_or_lists_of_them() {
        assert_eq!(matcher("'1'").exact_values(), Some(vec!["1"]));
        assert_eq!(matcher("['1', '2']").exact_values(), Some(vec!["1", "2"]));
        assert_eq!(matcher("['1', {glob: '2*'}]").exact_values(), None);
        assert_eq!(matcher("{glob: '1'}").exact_values(), None);
        assert_eq!(matcher("{not: '1'}").exact_values(), None);
    }
}
