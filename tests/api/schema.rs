//! `policies/schema.json`: generated from the Rust types, committed, and validating the
//! shipped policies (and refusing what `compile` refuses where a schema can say so).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenmint::trust::policy::schema::policy_file_schema_text;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Regenerate with `TOKENMINT_UPDATE_SCHEMA=1 cargo nextest run --test api schema`.
#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = root().join("policies/schema.json");
    let generated = policy_file_schema_text();
    if std::env::var_os("TOKENMINT_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
    }
    let committed = std::fs::read_to_string(&path).expect("policies/schema.json");
    assert!(
        committed == generated,
        "policies/schema.json is out of date: run TOKENMINT_UPDATE_SCHEMA=1 cargo nextest run --test api schema"
    );
}

/// YAML as an editor's language server sees it: plain `true`/`false` are booleans, the
/// rest text (integers are text too, which the schema accepts wherever it accepts them).
fn yaml_to_json(node: &marked_yaml::Node) -> Value {
    match node {
        marked_yaml::Node::Scalar(scalar) => match (scalar.may_coerce(), scalar.as_str()) {
            (true, "true") => Value::Bool(true),
            (true, "false") => Value::Bool(false),
            (_, text) => Value::String(text.to_owned()),
        },
        marked_yaml::Node::Sequence(items) => {
            Value::Array(items.iter().map(yaml_to_json).collect())
        }
        marked_yaml::Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.as_str().to_owned(), yaml_to_json(value)))
                .collect(),
        ),
    }
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&policy_file_schema_text()).expect("schema JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

fn parse(text: &str) -> Value {
    let options = || {
        marked_yaml::LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
    };
    let node = marked_yaml::parse_yaml_with_options(0, text, options())
        .or_else(|_| marked_yaml::parse_yaml_with_options(0, text, options().toplevel_sequence()))
        .expect("YAML");
    yaml_to_json(&node)
}

fn example_policy_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["examples/policies", "examples/three-tenants/policies"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|ext| ext == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_example_policy_validates_and_names_the_schema_for_editors() {
    let validator = validator();
    let files = example_policy_files();
    assert_eq!(files.len(), 9);
    for path in files {
        let text = std::fs::read_to_string(&path).expect("policy");
        let problems: Vec<String> = validator
            .iter_errors(&parse(&text))
            .map(|error| format!("{error} at {}", error.instance_path()))
            .collect();
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
        let header = text.lines().next().expect("first line");
        let schema = header
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}: no yaml-language-server header", path.display()));
        let resolved = path.parent().expect("dir").join(schema);
        assert_eq!(
            resolved
                .canonicalize()
                .expect("the schema the header names exists"),
            root()
                .join("policies/schema.json")
                .canonicalize()
                .expect("schema")
        );
    }
}

#[test]
fn the_schema_refuses_what_policies_cannot_be() {
    let validator = validator();
    let good = "issuer: github\ntarget: t\nscopes: [read]\nclaims:\n  repository_id: \"1\"\n";
    assert!(validator.is_valid(&parse(good)));
    assert!(validator.is_valid(&parse(&format!(
        "- name: a\n  {}",
        good.replace('\n', "\n  ").trim_end()
    ))));
    for bad in [
        good.replace("issuer: github\n", "isuer: github\n"),
        good.replace("scopes: [read]", "scopes: []"),
        good.replace("scopes: [read]", "scopes: [\"read write\"]"),
        good.replace("repository_id: \"1\"", "repository_id: {glob: a, regex: b}"),
        good.replace("repository_id: \"1\"", "repository_id: {not: {not: x}}"),
        good.replace("repository_id: \"1\"", "repository_id: [[a]]"),
        format!("{good}mode: shadow\n"),
        format!("{good}lint: {{allow: [TM000], reason: x}}\n"),
        format!("{good}lint: {{allow: [TM004]}}\n"),
        format!("name: Deploy\n{good}"),
        good.replace("claims:\n  repository_id: \"1\"\n", "claims: {}\n"),
    ] {
        assert!(!validator.is_valid(&parse(&bad)), "accepted:\n{bad}");
    }
}
