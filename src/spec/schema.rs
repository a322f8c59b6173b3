//! The JSON Schema of the experiment file (draft-07, what yaml-language-server reads), generated
//! from the Rust types so the schema, the parser and the validator can never disagree.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::types::ExperimentSpec;

/// The schema as a JSON value.
pub fn experiment_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let generator = SchemaSettings::draft07().into_generator();
        let schema = generator.into_root_schema_for::<ExperimentSpec>();
        schema.to_value()
    })
}

/// The schema as pretty JSON with a trailing newline, exactly as checked in under `schemas/`.
pub fn experiment_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(experiment_schema())
        .unwrap_or_else(|error| unreachable!("a JSON value always serialises: {error}"));
    text.push('\n');
    text
}

/// The schema node that describes the value at `path` (object properties and list items),
/// following `$ref`s and the non-null branch of optional values.
pub fn node_at<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = resolve(root, root);
    for segment in path {
        node = child(root, node, segment)?;
    }
    Some(node)
}

/// The allowed values of an enumeration node: `enum: [...]`, or `oneOf` branches that are each
/// a `const` (schemars writes documented enum variants that way).
pub fn enum_values(root: &Value, node: &Value) -> Vec<String> {
    let node = resolve(root, node);
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    let Some(branches) = node.get("oneOf").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for branch in branches {
        let branch = resolve(root, branch);
        if let Some(value) = branch.get("const").and_then(Value::as_str) {
            values.push(value.to_owned());
        } else if let Some(more) = branch.get("enum").and_then(Value::as_array) {
            values.extend(more.iter().filter_map(Value::as_str).map(str::to_owned));
        } else {
            return Vec::new();
        }
    }
    values
}

/// The property names an object node allows.
pub fn property_names(root: &Value, node: &Value) -> Vec<String> {
    let node = resolve(root, node);
    node.get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut current = node;
    for _ in 0..16 {
        if let Some(reference) = current.get("$ref").and_then(Value::as_str) {
            match reference
                .strip_prefix('#')
                .and_then(|pointer| root.pointer(pointer))
            {
                Some(target) => current = target,
                None => return current,
            }
        } else if let Some([only]) = current
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            // draft-07 ignores keywords beside `$ref`, so schemars wraps it: `allOf: [$ref]`.
            current = only;
        } else if let Some(branches) = current.get("anyOf").and_then(Value::as_array) {
            // `Option<T>` is `anyOf: [T, null]`: describe T.
            match branches
                .iter()
                .find(|branch| branch.get("type").and_then(Value::as_str) != Some("null"))
            {
                Some(branch) => current = branch,
                None => return current,
            }
        } else {
            return current;
        }
    }
    current
}

fn child<'a>(root: &'a Value, node: &'a Value, segment: &str) -> Option<&'a Value> {
    let node = resolve(root, node);
    if let Some(property) = node.get("properties").and_then(|p| p.get(segment)) {
        return Some(resolve(root, property));
    }
    if segment.parse::<usize>().is_ok()
        && let Some(items) = node.get("items")
    {
        return Some(resolve(root, items));
    }
    // Mappings with free keys (`sweep.grid`) describe every value with `additionalProperties`.
    if let Some(values) = node
        .get("additionalProperties")
        .filter(|values| values.is_object())
    {
        return Some(resolve(root, values));
    }
    // Tagged enums are `oneOf` object branches: the child is in whichever branch has it.
    ["oneOf", "anyOf"]
        .iter()
        .filter_map(|keyword| node.get(*keyword).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| child(root, branch, segment))
}

/// The tags of an externally tagged enum node (`oneOf` branches that are single-key objects),
/// each with its branch index; empty when the node is not one.
pub fn variant_tags(root: &Value, node: &Value) -> Vec<String> {
    let node = resolve(root, node);
    let Some(branches) = node.get("oneOf").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut tags = Vec::new();
    for branch in branches {
        let branch = resolve(root, branch);
        match branch
            .get("required")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([Value::String(tag)]) => tags.push(tag.clone()),
            _ => return Vec::new(),
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_draft_07_and_describes_nested_fields() {
        let schema = experiment_schema();
        assert_eq!(
            schema["$schema"],
            Value::from("http://json-schema.org/draft-07/schema#")
        );
        let path: Vec<String> = ["train", "optimizer"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let optimizer = node_at(schema, &path).unwrap();
        let names = property_names(schema, optimizer);
        assert!(names.contains(&"lr".to_owned()), "{names:?}");
        assert!(names.contains(&"weight_decay".to_owned()));
    }
}
