//! Policy files as YAML: parsing with line numbers (duplicate keys, anchors and tags
//! rejected), the file's shape (one policy or a list of policies), typed reads of
//! scalar fields, and the collector every load error goes through.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node, parse_yaml_with_options};

use super::PolicyError;

/// Collects every error of one file, so an operator sees them all at once.
#[derive(Debug)]
pub(crate) struct Diagnostics<'a> {
    file: String,
    /// The file's text, to find the column an error's line starts its entry at.
    text: &'a str,
    errors: Vec<PolicyError>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &str, text: &'a str) -> Self {
        Self {
            file: file.to_owned(),
            text,
            errors: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.clone(),
            line,
            column: entry_column(self.text, line),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn into_errors(self) -> Vec<PolicyError> {
        self.errors
    }
}

/// What a policy file holds.
#[derive(Debug)]
pub(crate) enum Shape {
    /// One policy; its name defaults to the file stem.
    One(MarkedMappingNode),
    /// A list of policies; each needs a `name`.
    List(Vec<Node>),
}

const FILE_FIELD: &str = "yaml";
const SHAPE_MESSAGE: &str = "a policy file holds one policy (a mapping) or a list of policies";

/// Parses a policy file, reporting syntax and shape problems with their line.
pub(crate) fn parse(text: &str, diag: &mut Diagnostics) -> Option<Shape> {
    if let Some(line) = second_document_line(text) {
        diag.push(
            line,
            FILE_FIELD,
            "a policy file holds one YAML document; put several policies in a list instead",
        );
        return None;
    }
    // `prevent_coercion` keeps the difference between a plain and a quoted scalar, so that
    // `enabled: "true"` is not a boolean and a plain `~` is null while `"~"` is a string.
    let options = || {
        LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
    };
    let node = match parse_yaml_with_options(0, text, options()) {
        Err(LoadError::TopLevelMustBeMapping(_)) => {
            parse_yaml_with_options(0, text, options().toplevel_sequence())
        }
        other => other,
    };
    let node = match node {
        Ok(node) => node,
        Err(err) => {
            report_load_error(text, &err, diag);
            return None;
        }
    };
    match node {
        Node::Mapping(map) if map.is_empty() => {
            diag.push(
                line_of(&Node::Mapping(map)).max(1),
                FILE_FIELD,
                "the file holds no policy",
            );
            None
        }
        Node::Mapping(map) => Some(Shape::One(map)),
        Node::Sequence(seq) if seq.is_empty() => {
            diag.push(
                line_of(&Node::Sequence(seq)).max(1),
                FILE_FIELD,
                "the list holds no policy",
            );
            None
        }
        Node::Sequence(seq) => Some(Shape::List(seq.iter().cloned().collect())),
        Node::Scalar(scalar) => {
            diag.push(key_line(&scalar), FILE_FIELD, SHAPE_MESSAGE);
            None
        }
    }
}

fn report_load_error(text: &str, err: &LoadError, diag: &mut Diagnostics) {
    match err {
        LoadError::DuplicateKey(inner) => {
            let first = key_line(&inner.prev_key);
            diag.push(
                key_line(&inner.key),
                inner.key.as_str(),
                format!("duplicate key (first defined on line {first})"),
            );
        }
        LoadError::ScanError(mark, scan) => {
            // The parser notices a missing `]` or `}` only on a later line; say where the
            // collection opened, which is where it usually needs closing.
            let message = match open_flow_collection(text, mark.character()) {
                Some(open) if open.line < mark.line() => format!(
                    "{}; the {} opened with {:?} on line {} is not closed: end it with {:?}",
                    scan.info(),
                    open.what(),
                    open.opener,
                    open.line,
                    open.closer()
                ),
                _ => scan.info().to_owned(),
            };
            diag.push(mark.line(), FILE_FIELD, message);
        }
        LoadError::TopLevelMustBeMapping(mark) | LoadError::TopLevelMustBeSequence(mark) => {
            diag.push(mark.line(), FILE_FIELD, SHAPE_MESSAGE);
        }
        LoadError::UnexpectedAnchor(mark) => diag.push(
            mark.line(),
            FILE_FIELD,
            "YAML anchors and aliases are not supported in policies",
        ),
        LoadError::UnexpectedTag(mark) => diag.push(
            mark.line(),
            FILE_FIELD,
            "YAML tags are not supported in policies",
        ),
        LoadError::MappingKeyMustBeScalar(mark) => {
            diag.push(
                mark.line(),
                FILE_FIELD,
                "mapping keys must be plain strings",
            );
        }
    }
}

/// A flow collection (`[...]` or `{...}`) still open at some point of a file.
#[derive(Debug, PartialEq, Eq)]
struct OpenCollection {
    opener: char,
    /// 1-based.
    line: usize,
}

impl OpenCollection {
    fn what(&self) -> &'static str {
        if self.opener == '[' {
            "list"
        } else {
            "mapping"
        }
    }

    fn closer(&self) -> char {
        if self.opener == '[' { ']' } else { '}' }
    }
}

/// The innermost flow collection open at character `until` of `text`, by a scan that
/// knows just enough YAML for that: quoted scalars, comments, block scalars (`|`, `>`),
/// and that `[` and `{` open a collection in block context only where a value starts
/// (`a[0]` is a plain scalar). When unsure it may answer `None`, never a wrong line for a
/// file whose brackets are balanced.
fn open_flow_collection(text: &str, until: usize) -> Option<OpenCollection> {
    let chars: Vec<char> = text.chars().take(until).collect();
    let mut stack: Vec<OpenCollection> = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // The indentation of the line a block scalar started on, while inside one.
    let mut block_scalar: Option<usize> = None;
    let mut at_line_start = true;
    while i < chars.len() {
        let c = chars[i];
        if at_line_start {
            at_line_start = false;
            let indent = chars[i..].iter().take_while(|c| **c == ' ').count();
            let blank = chars
                .get(i + indent)
                .is_none_or(|next| *next == '\n' || *next == '#');
            if let Some(scalar_indent) = block_scalar {
                if blank || indent > scalar_indent {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    continue;
                }
                block_scalar = None;
            }
        }
        // What comes before `c` on its line, ignoring spaces: where values start.
        let previous = chars[..i]
            .iter()
            .rev()
            .take_while(|c| **c != '\n')
            .find(|c| !c.is_whitespace())
            .copied();
        let after_space = i == 0 || chars[i - 1].is_whitespace();
        let value_starts = match previous {
            None => true,
            Some(',' | '[' | '{') => !stack.is_empty(),
            Some(':' | '-' | '?') => after_space,
            Some(_) => false,
        };
        match c {
            '\n' => {
                line += 1;
                at_line_start = true;
            }
            '#' if after_space => {
                while i + 1 < chars.len() && chars[i + 1] != '\n' {
                    i += 1;
                }
            }
            '"' | '\'' if value_starts => {
                let quote = c;
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '\\' if quote == '"' => i += 1,
                        '\'' if quote == '\'' && chars.get(i + 1) == Some(&'\'') => i += 1,
                        q if q == quote => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            '[' | '{' if value_starts || !stack.is_empty() => {
                stack.push(OpenCollection { opener: c, line });
            }
            ']' | '}' if !stack.is_empty() => {
                stack.pop();
            }
            '|' | '>' if value_starts && stack.is_empty() => {
                let indent = chars[..i].iter().rev().take_while(|c| **c != '\n').count();
                let line_start = i - indent;
                block_scalar = Some(
                    chars[line_start..]
                        .iter()
                        .take_while(|c| **c == ' ')
                        .count(),
                );
            }
            _ => {}
        }
        i += 1;
    }
    stack.pop()
}

/// The line of a second YAML document (`---` after content, or anything after `...`).
///
/// The YAML loader reads only the first document, so without this check a second one
/// would be silently ignored.
fn second_document_line(text: &str) -> Option<usize> {
    let is_marker = |line: &str, marker: &str| {
        line.strip_prefix(marker)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let mut in_document = false;
    let mut ended = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if is_marker(line, "---") {
            if in_document || ended {
                return Some(number);
            }
            in_document = true;
        } else if is_marker(line, "...") {
            ended = true;
            in_document = false;
        } else {
            let trimmed = line.trim();
            let blank_or_comment = trimmed.is_empty() || trimmed.starts_with('#');
            let directive = line.starts_with('%') && !in_document;
            let is_content = !blank_or_comment && !directive;
            if is_content {
                if ended {
                    return Some(number);
                }
                in_document = true;
            }
        }
    }
    None
}

/// The 1-based column where line `line` of `text` starts its entry: past indentation and
/// any `- ` list markers, so it points at the key (`ref: main`) or value the line holds.
/// 0 for line 0 (the whole file); 1 for a line that does not exist.
pub(crate) fn entry_column(text: &str, line: usize) -> usize {
    if line == 0 {
        return 0;
    }
    let Some(content) = text.lines().nth(line - 1) else {
        return 1;
    };
    let mut column = 1;
    let mut rest = content;
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        column += rest.chars().count() - trimmed.chars().count();
        match trimmed.strip_prefix('-') {
            Some(after) if after.starts_with([' ', '\t']) => {
                column += 1;
                rest = after;
            }
            _ => return column,
        }
    }
}

/// 1-based line where a node starts.
pub(crate) fn line_of(node: &Node) -> usize {
    node.span().start().map_or(0, |mark| mark.line())
}

/// A 1-based line and column in a policy file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub(crate) fn of(mark: &marked_yaml::Marker) -> Position {
        Position {
            line: mark.line(),
            column: mark.column(),
        }
    }
}

/// Where a scalar (a mapping key) starts.
pub(crate) fn key_position(scalar: &MarkedScalarNode) -> Position {
    scalar
        .span()
        .start()
        .map_or_else(Position::default, Position::of)
}

/// 1-based line of a scalar (a mapping key).
pub(crate) fn key_line(scalar: &MarkedScalarNode) -> usize {
    scalar.span().start().map_or(0, |mark| mark.line())
}

/// A plain (unquoted) `~`, `null` or empty scalar: YAML's null.
pub(crate) fn is_null(scalar: &MarkedScalarNode) -> bool {
    scalar.may_coerce() && matches!(scalar.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// How a node reads in an error message.
pub(crate) fn describe(node: &Node) -> &'static str {
    match node {
        Node::Scalar(scalar) if is_null(scalar) => "null",
        Node::Scalar(_) => "a string",
        Node::Sequence(_) => "a list",
        Node::Mapping(_) => "a mapping",
    }
}

/// A non-null scalar's text, or an error naming what was found instead.
pub(crate) fn string(node: &Node, field: &str, diag: &mut Diagnostics) -> Option<String> {
    match node {
        Node::Scalar(scalar) if !is_null(scalar) => Some(scalar.as_str().to_owned()),
        other => {
            diag.push(
                line_of(other),
                field,
                format!("expected a string, found {}", describe(other)),
            );
            None
        }
    }
}

/// A YAML boolean: a plain `true` or `false`, nothing else.
pub(crate) fn boolean(node: &Node, field: &str, diag: &mut Diagnostics) -> Option<bool> {
    match node {
        Node::Scalar(scalar) if scalar.may_coerce() && scalar.as_str() == "true" => Some(true),
        Node::Scalar(scalar) if scalar.may_coerce() && scalar.as_str() == "false" => Some(false),
        other => {
            let found = match other {
                Node::Scalar(scalar) if !is_null(scalar) => {
                    format!("{:?}", scalar.as_str())
                }
                _ => describe(other).to_owned(),
            };
            diag.push(
                line_of(other),
                field,
                format!("expected true or false (unquoted), found {found}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_errors(text: &str) -> Vec<PolicyError> {
        let mut diag = Diagnostics::new("policies/p.yaml", text);
        let shape = parse(text, &mut diag);
        assert!(shape.is_none(), "expected a parse failure for {text:?}");
        diag.into_errors()
    }

    #[test]
    fn duplicate_key_names_the_line_of_the_second_key() {
        let text = "issuer: github\ntarget: tenant-prod\nclaims:\n  ref: refs/heads/main\n  ref: refs/heads/dev\n";
        let errors = parse_errors(text);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "policies/p.yaml:5: ref: duplicate key (first defined on line 4)"
        );
    }

    #[test]
    fn top_level_list_and_mapping_are_both_accepted() {
        let mut diag = Diagnostics::new("p.yaml", "");
        assert!(matches!(parse("a: b\n", &mut diag), Some(Shape::One(_))));
        assert!(matches!(
            parse("- a: b\n- c: d\n", &mut diag),
            Some(Shape::List(list)) if list.len() == 2
        ));
        assert!(diag.is_empty());
    }

    #[test]
    fn scalars_empty_files_and_second_documents_are_rejected() {
        assert_eq!(parse_errors("just text\n")[0].field, "yaml");
        assert_eq!(parse_errors("")[0].message, "the file holds no policy");
        assert_eq!(
            parse_errors("# only a comment\n")[0].message,
            "the file holds no policy"
        );
        assert_eq!(parse_errors("[]\n")[0].message, "the list holds no policy");
        let second = parse_errors("---\nname: a\n---\nname: b\n");
        assert_eq!(second[0].line, 3);
        let after_end = parse_errors("name: a\n...\nname: b\n");
        assert_eq!(after_end[0].line, 3);
    }

    #[test]
    fn a_single_leading_document_marker_is_fine() {
        let mut diag = Diagnostics::new("p.yaml", "");
        assert!(parse("# c\n---\nname: a\n...\n", &mut diag).is_some());
        assert!(diag.is_empty(), "{:?}", diag.into_errors());
    }

    #[test]
    fn anchors_tags_and_syntax_errors_are_reported_with_their_line() {
        let anchor = parse_errors("a: &x b\nc: *x\n");
        assert!(anchor[0].message.contains("anchors"), "{anchor:?}");
        assert_eq!(anchor[0].line, 1);
        let tag = parse_errors("a: !!str b\n");
        assert!(tag[0].message.contains("tags"), "{tag:?}");
        let syntax = parse_errors("a: b\nc: [d\n");
        assert_eq!(syntax[0].field, "yaml");
        assert!(syntax[0].line >= 2, "{syntax:?}");
        let alias_only = parse_errors("a: *nowhere\n");
        assert_eq!(alias_only[0].field, "yaml");
    }

    /// The parser notices a missing `]` on the line after; the error says where the list
    /// opened too.
    #[test]
    fn an_unclosed_flow_collection_is_reported_with_the_line_it_opened_on() {
        let list = parse_errors("issuer: github\nscopes: [read, write\ntarget: api\n");
        assert_eq!(
            list[0].to_string(),
            "policies/p.yaml:3: yaml: illegal placement of ':' indicator; the list opened with \
             '[' on line 2 is not closed: end it with ']'"
        );
        let at_end = parse_errors("issuer: github\nscopes: [read, write\n");
        assert_eq!(
            at_end[0].to_string(),
            "policies/p.yaml:3: yaml: while parsing a flow sequence, expected ',' or ']'; the \
             list opened with '[' on line 2 is not closed: end it with ']'"
        );
        let mapping = parse_errors("issuer: github\nclaims: {ref: main\ntarget: api\n");
        assert_eq!(
            mapping[0].to_string(),
            "policies/p.yaml:3: yaml: while parsing a flow mapping, did not find expected ',' or \
             '}'; the mapping opened with '{' on line 2 is not closed: end it with '}'"
        );
        // Other syntax errors carry no such note.
        let indent = parse_errors("issuer: github\n  target: api\n");
        assert_eq!(
            indent[0].to_string(),
            "policies/p.yaml:2: yaml: mapping values are not allowed in this context"
        );
    }

    #[test]
    fn the_open_collection_scan_skips_quotes_comments_plain_brackets_and_block_scalars() {
        let open = |text: &str| open_flow_collection(text, text.chars().count()).map(|o| o.line);
        assert_eq!(open("a: [b, c]\nd: [e\n"), Some(2));
        assert_eq!(open("a: [b, [c, d]\n"), Some(1));
        assert_eq!(open("a: [b, [c\n"), Some(1), "the innermost");
        assert_eq!(open("a: \"[\"\nb: '{'\n"), None);
        assert_eq!(open("a: 'it''s [x'\n"), None);
        assert_eq!(open("a: b # [\n"), None);
        assert_eq!(
            open("a: refs/heads/[x\n"),
            None,
            "a bracket inside a plain scalar"
        );
        assert_eq!(open("a: |\n  [x\n  {y\nb: [c\n"), Some(4));
        assert_eq!(open("- [a, \"b]\"\n"), Some(1));
        assert_eq!(open("a: [b, c]\n"), None);
    }

    #[test]
    fn booleans_are_plain_true_or_false_only() {
        let mut diag = Diagnostics::new("p.yaml", "");
        let Some(Shape::One(map)) = parse(
            "a: true\nb: false\nc: \"true\"\nd: yes\ne: True\nf:\n",
            &mut diag,
        ) else {
            panic!("expected a mapping");
        };
        let read = |key: &str, diag: &mut Diagnostics| {
            let node = map.get_node(key).expect("key present");
            boolean(node, key, diag)
        };
        assert_eq!(read("a", &mut diag), Some(true));
        assert_eq!(read("b", &mut diag), Some(false));
        assert!(diag.is_empty());
        for key in ["c", "d", "e", "f"] {
            assert_eq!(read(key, &mut diag), None, "{key}");
        }
        let errors = diag.into_errors();
        assert_eq!(errors.len(), 4);
        assert_eq!(
            errors[0].message,
            "expected true or false (unquoted), found \"true\""
        );
        assert_eq!(
            errors[3].message,
            "expected true or false (unquoted), found null"
        );
    }
}
