//! Printing as kubectl does: aligned columns with upper-case headers, or the whole answer as
//! JSON or YAML for scripts.

use serde::Serialize;

use crate::{Failure, Format};

/// Prints `data` as JSON or YAML when asked, else the table `table` draws.
pub fn print<T: Serialize + ?Sized>(
    format: Option<Format>,
    data: &T,
    table: impl FnOnce() -> String,
) -> Result<(), Failure> {
    let text = match format {
        Some(Format::Json) => serde_json::to_string_pretty(data).map_err(|e| Failure::Api(e.to_string()))? + "\n",
        Some(Format::Yaml) => serde_yaml_ng::to_string(data).map_err(|e| Failure::Api(e.to_string()))?,
        _ => {
            let t = table();
            if t.is_empty() { t } else { t + "\n" }
        }
    };
    print!("{text}");
    Ok(())
}

/// Columns aligned like `kubectl get`: three spaces between them, none after the last.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.to_string() } else { format!("{c:<w$}   ", w = widths[i]) })
            .collect::<String>()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// `-` for what is not known, as kubectl prints `<none>`.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}
