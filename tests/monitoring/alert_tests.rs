//! `promtool test rules` cases for every alert of `monitoring/alerts.yaml`, one that fires and
//! one that stays silent, whose input series are the label sets a real Prometheus scraped
//! from the operator during the scenario (values over time are the case's own).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

/// The label sets Prometheus holds, by metric name.
pub struct Scraped(pub Vec<Map<String, Value>>);

impl Scraped {
    /// The first series of `name` whose labels satisfy `pred`.
    pub fn find(&self, name: &str, pred: impl Fn(&Map<String, Value>) -> bool) -> Option<Map<String, Value>> {
        self.0.iter().find(|s| s.get("__name__").and_then(Value::as_str) == Some(name) && pred(s)).cloned()
    }

    /// Every series of `name` with the same `keys` labels as `like`.
    pub fn siblings(&self, name: &str, like: &Map<String, Value>, keys: &[&str]) -> Vec<Map<String, Value>> {
        self.0
            .iter()
            .filter(|s| s.get("__name__").and_then(Value::as_str) == Some(name))
            .filter(|s| keys.iter().all(|k| s.get(*k) == like.get(*k)))
            .cloned()
            .collect()
    }
}

pub fn label<'a>(s: &'a Map<String, Value>, k: &str) -> &'a str {
    s.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// `name{k="v",...}` in promtool's series notation.
fn series(s: &Map<String, Value>) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let labels: Vec<String> = s
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v.as_str().unwrap_or_default())))
        .collect();
    format!("{}{{{}}}", label(s, "__name__"), labels.join(","))
}

/// One input series with its values (`0+10x40`), and the test case it belongs to.
pub struct Case {
    pub name: String,
    pub alert: &'static str,
    pub inputs: Vec<(Map<String, Value>, String)>,
    /// The labels the alert fires with (besides the rule's own), or `None` for a silent case.
    pub fires_with: Option<BTreeMap<String, String>>,
}

/// The labels `keys` of `s`, for an expected alert.
pub fn labels_of(s: &Map<String, Value>, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter().map(|k| (k.to_string(), label(s, k).to_string())).collect()
}

/// Every label but the name: what a comparison keeps.
pub fn all_labels(s: &Map<String, Value>) -> BTreeMap<String, String> {
    s.iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

type Strings = BTreeMap<String, String>;

/// The rules file as promtool reads it: alert name → (labels, annotations).
fn rules(path: &Path) -> BTreeMap<String, (Strings, Strings)> {
    let text = std::fs::read_to_string(path).expect("read the rules file");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("the rules file is YAML");
    let mut out = BTreeMap::new();
    for group in doc["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let map = |v: &Value| -> BTreeMap<String, String> {
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            };
            if let Some(alert) = rule["alert"].as_str() {
                out.insert(alert.to_string(), (map(&rule["labels"]), map(&rule["annotations"])));
            }
        }
    }
    out
}

/// The alert names of the rules file.
pub fn alert_names(path: &Path) -> Vec<String> {
    rules(path).into_keys().collect()
}

/// The promtool test file for `cases` against `rules_file`: every case evaluated at 35 min.
pub fn test_file(rules_file: &Path, cases: &[Case]) -> String {
    let defined = rules(rules_file);
    let mut tests = Vec::new();
    for case in cases {
        let (rule_labels, annotations) = defined.get(case.alert).unwrap_or_else(|| panic!("no alert {}", case.alert));
        let input: Vec<Value> =
            case.inputs.iter().map(|(s, values)| serde_json::json!({"series": series(s), "values": values})).collect();
        let exp: Vec<Value> = match &case.fires_with {
            None => vec![],
            Some(labels) => {
                let mut all = rule_labels.clone();
                all.extend(labels.clone());
                // Annotations name labels only ({{ $labels.x }}): expanded here as Prometheus does.
                let expanded: BTreeMap<String, String> = annotations
                    .iter()
                    .map(|(k, v)| {
                        let text = labels
                            .iter()
                            .fold(v.clone(), |t, (lk, lv)| t.replace(&format!("{{{{ $labels.{lk} }}}}"), lv));
                        assert!(
                            !text.contains("{{"),
                            "annotation {k} of {} uses more than $labels: {text}",
                            case.alert
                        );
                        (k.clone(), text)
                    })
                    .collect();
                vec![serde_json::json!({"exp_labels": all, "exp_annotations": expanded})]
            }
        };
        tests.push(serde_json::json!({
            "name": case.name,
            "interval": "1m",
            "input_series": input,
            "alert_rule_test": [{"eval_time": "35m", "alertname": case.alert, "exp_alerts": exp}],
        }));
    }
    let file = serde_json::json!({
        "rule_files": [rules_file.display().to_string()],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    serde_yaml_ng::to_string(&file).expect("YAML")
}

/// `promtool ARGS`: whether it succeeded, and what it said.
pub fn promtool(binary: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(binary).args(args).output().expect("run promtool");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
