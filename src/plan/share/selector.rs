//! Validating a share's Mango selector before CouchDB sees it, and the selector a replication
//! document carries.

use serde_json::{Value, json};

/// Error for a bad Mango selector: `path` like `$.$or[1].age`, `message` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {path}: {message}")]
pub struct SelectorError {
    /// Where in the selector: `$` is the selector itself, then `.key` and `[index]`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

fn selector_error(path: &str, message: impl Into<String>) -> SelectorError {
    SelectorError { path: path.to_string(), message: message.into() }
}

/// Operators combining selectors.
const COMBINATION_OPERATORS: &[&str] = &["$and", "$or", "$nor", "$not"];
/// Operators on a field's value.
const CONDITION_OPERATORS: &[&str] = &[
    "$lt",
    "$lte",
    "$eq",
    "$ne",
    "$gte",
    "$gt",
    "$exists",
    "$type",
    "$in",
    "$nin",
    "$size",
    "$mod",
    "$regex",
    "$all",
    "$elemMatch",
    "$allMatch",
    "$keyMapMatch",
    "$beginsWith",
];
/// The values `$type` accepts.
const MANGO_TYPES: &[&str] = &["null", "boolean", "number", "string", "array", "object"];

/// Checks a Mango selector is well formed: an object; every key starting with `$` is a known
/// operator (combination: $and $or $nor $not; condition: $lt $lte $eq $ne $gte $gt $exists $type $in $nin $size $mod $regex $all $elemMatch $allMatch $keyMapMatch $beginsWith);
/// $and/$or/$nor take a non-empty array of objects; $not, $elemMatch, $allMatch, $keyMapMatch an object;
/// $in/$nin/$all an array; $exists a bool; $type a string among null boolean number string array object;
/// $size a non-negative integer; $mod an array of two integers with a non-zero divisor; $regex a string; $beginsWith a string.
/// Field names (keys not starting with `$`) may hold any value (an implicit $eq) or an object of operators.
pub fn validate_selector(selector: &Value) -> Result<(), SelectorError> {
    validate_object(selector, "$")
}

/// An object of field names and operators, at `path`.
fn validate_object(value: &Value, path: &str) -> Result<(), SelectorError> {
    let Value::Object(map) = value else {
        return Err(selector_error(path, format!("must be an object, not {}", json_type(value))));
    };
    for (key, arg) in map {
        let here = format!("{path}.{key}");
        if !key.starts_with('$') {
            // A field: a literal (implicit $eq), or an object of operators or sub-fields.
            if arg.is_object() {
                validate_object(arg, &here)?;
            }
            continue;
        }
        if !COMBINATION_OPERATORS.contains(&key.as_str()) && !CONDITION_OPERATORS.contains(&key.as_str()) {
            return Err(selector_error(path, format!("unknown operator {key}")));
        }
        validate_operator(key, arg, &here)?;
    }
    Ok(())
}

/// The argument of a known operator `op`, at `path` (which ends in `.op`).
fn validate_operator(op: &str, arg: &Value, path: &str) -> Result<(), SelectorError> {
    let fail = |message: &str| Err(selector_error(path, format!("{op} {message}, not {}", json_type(arg))));
    match op {
        "$and" | "$or" | "$nor" => {
            let Value::Array(items) = arg else { return fail("takes an array of selectors") };
            if items.is_empty() {
                return Err(selector_error(path, format!("{op} takes a non-empty array of selectors")));
            }
            for (i, item) in items.iter().enumerate() {
                validate_object(item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        "$not" | "$elemMatch" | "$allMatch" | "$keyMapMatch" => validate_object(arg, path),
        "$in" | "$nin" | "$all" => {
            if arg.is_array() {
                Ok(())
            } else {
                fail("takes an array")
            }
        }
        "$exists" => {
            if arg.is_boolean() {
                Ok(())
            } else {
                fail("takes true or false")
            }
        }
        "$type" => match arg.as_str() {
            Some(t) if MANGO_TYPES.contains(&t) => Ok(()),
            Some(t) => Err(selector_error(path, format!("$type {t:?} is not one of {}", MANGO_TYPES.join(", ")))),
            None => fail("takes a type name"),
        },
        "$size" => {
            if arg.as_u64().is_some() {
                Ok(())
            } else {
                fail("takes a non-negative integer")
            }
        }
        "$mod" => match arg.as_array().map(Vec::as_slice) {
            Some([divisor, remainder]) if is_integer(divisor) && is_integer(remainder) => {
                if divisor.as_i64() == Some(0) {
                    Err(selector_error(path, "$mod divisor must not be zero"))
                } else {
                    Ok(())
                }
            }
            _ => fail("takes [divisor, remainder], two integers"),
        },
        "$regex" | "$beginsWith" => {
            if arg.is_string() {
                Ok(())
            } else {
                fail("takes a string")
            }
        }
        // $lt $lte $eq $ne $gte $gt: any value.
        _ => Ok(()),
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The selector a replication uses: the share's selector, widened with `{"_id": sharing_id}` in an `$or`
/// when there is a sharing document, so the receiving side always gets it. `None` when neither is set
/// (replicate everything). With a selector but no sharing doc: the selector unchanged. With a sharing doc
/// but no selector: `None` too, since everything, the sharing document included, replicates.
pub fn replication_selector(selector: Option<&Value>, sharing_doc_id: Option<&str>) -> Option<Value> {
    let selector = selector?;
    Some(match sharing_doc_id {
        Some(id) => json!({ "$or": [selector.clone(), { "_id": id }] }),
        None => selector.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_selector_table() {
        // Ok, or Err((path, a word of the message)).
        type Expect = Result<(), (&'static str, &'static str)>;
        let cases: Vec<(Value, Expect)> = vec![
            (json!({}), Ok(())),
            (json!({"type": "task", "n": 3, "tags": ["a"], "nested": {"x": null}}), Ok(())),
            (json!({"age": {"$gt": 3, "$lte": 9}, "name": {"$regex": "^a", "$beginsWith": "a"}}), Ok(())),
            (json!({"$or": [{"a": 1}, {"b": {"$in": [1, 2]}}], "$not": {"c": {"$exists": false}}}), Ok(())),
            (json!({"a": {"$type": "string"}, "b": {"$size": 0}, "c": {"$mod": [3, 1]}, "d": {"$nin": []}}), Ok(())),
            (json!({"tags": {"$elemMatch": {"$eq": "x"}}, "m": {"$keyMapMatch": {"$gt": 1}}}), Ok(())),
            (json!({"$nor": [{"a": {"$allMatch": {"$ne": 0}}}], "e": {"$all": [1], "$eq": {"$literal": 1}}}), Ok(())),
            (json!({"a": {"b": {"$ne": null}}}), Ok(())),
            (json!([{"a": 1}]), Err(("$", "object"))),
            (json!("type"), Err(("$", "object"))),
            (json!({"$or": [{"a": 1}, {"b": {"$bad": 1}}]}), Err(("$.$or[1].b", "$bad"))),
            (json!({"$where": "1"}), Err(("$", "$where"))),
            (json!({"$and": []}), Err(("$.$and", "non-empty"))),
            (json!({"$or": {"a": 1}}), Err(("$.$or", "array"))),
            (json!({"$or": [{"a": 1}, 2]}), Err(("$.$or[1]", "object"))),
            (json!({"$not": [{"a": 1}]}), Err(("$.$not", "object"))),
            (json!({"a": {"$elemMatch": 1}}), Err(("$.a.$elemMatch", "object"))),
            (json!({"a": {"$in": 1}}), Err(("$.a.$in", "array"))),
            (json!({"a": {"$exists": "yes"}}), Err(("$.a.$exists", "true or false"))),
            (json!({"a": {"$type": "integer"}}), Err(("$.a.$type", "integer"))),
            (json!({"a": {"$type": 1}}), Err(("$.a.$type", "type name"))),
            (json!({"a": {"$size": -1}}), Err(("$.a.$size", "non-negative integer"))),
            (json!({"a": {"$size": 1.5}}), Err(("$.a.$size", "non-negative integer"))),
            (json!({"a": {"$mod": [0, 1]}}), Err(("$.a.$mod", "zero"))),
            (json!({"a": {"$mod": [2]}}), Err(("$.a.$mod", "two integers"))),
            (json!({"a": {"$mod": [2.5, 1]}}), Err(("$.a.$mod", "two integers"))),
            (json!({"a": {"$regex": 1}}), Err(("$.a.$regex", "string"))),
            (json!({"a": {"$beginsWith": ["x"]}}), Err(("$.a.$beginsWith", "string"))),
            (
                json!({"$and": [{"$or": [{"x": {"$gt": 1}}, {"y": {"$exists": 1}}]}]}),
                Err(("$.$and[0].$or[1].y.$exists", "true")),
            ),
        ];
        for (selector, expect) in cases {
            let got = validate_selector(&selector);
            match (&got, expect) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err((path, word))) => {
                    assert_eq!(e.path, path, "{selector}: {e}");
                    assert!(e.message.contains(word), "{selector}: {e:?} should mention {word}");
                    assert_eq!(e.to_string(), format!("selector {}: {}", e.path, e.message));
                }
                _ => panic!("{selector}: got {got:?}, expected {expect:?}"),
            }
        }
    }

    #[test]
    fn the_replication_selector_always_carries_the_sharing_document() {
        let s = json!({"type": "task"});
        assert_eq!(replication_selector(None, None), None);
        assert_eq!(replication_selector(None, Some("db_sharing-a--b")), None, "everything replicates anyway");
        assert_eq!(replication_selector(Some(&s), None), Some(s.clone()));
        let widened = replication_selector(Some(&s), Some("db_sharing-a--b")).expect("a selector");
        assert_eq!(widened, json!({"$or": [{"type": "task"}, {"_id": "db_sharing-a--b"}]}));
        assert_eq!(validate_selector(&widened), Ok(()));
    }
}
