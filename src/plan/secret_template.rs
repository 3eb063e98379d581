//! `CouchUser.spec.credentialsSecret.template`: extra Secret keys rendered with minijinja from
//! the user's credentials. Pure: the controller passes the values in, and a template that uses
//! a name it does not know is refused with that name before anything is written.
//!
//! The names a template may use:
//!
//! | name | value |
//! | --- | --- |
//! | `username`, `password` | as CouchDB knows them |
//! | `usernameEncoded`, `passwordEncoded` | percent-encoded for the user-info part of a URL |
//! | `url` | the CouchServer's URL |
//! | `urlWithCredentials` | the server URL with the credentials in it (percent-encoded) |
//! | `databaseURL("NAME")` | the URL of database `NAME`, with the credentials in it |
//!
//! plus minijinja's built-in filters and tests (`urlencode`, `upper`, `default`, ...). Errors
//! never carry a rendered value: they name the key, the line and what was wrong.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::user::connection_url;

/// The variables a template may use (`databaseURL` is a function).
pub const PLACEHOLDERS: [&str; 7] =
    ["username", "password", "usernameEncoded", "passwordEncoded", "url", "urlWithCredentials", "databaseURL"];

/// Keys the operator writes itself: a template may not take them.
pub fn reserved_key(key: &str) -> bool {
    matches!(key, "username" | "password" | "url") || key.starts_with("url-")
}

/// Bounds the work one template may cost the operator (a loop over a huge range).
const FUEL: u64 = 50_000;
/// The largest rendered value kept (a Secret is at most 1 MiB in all).
const MAX_RENDERED: usize = 64 * 1024;

/// The WHATWG user-info set, as the `url` crate encodes credentials.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|')
    .add(b'%');

/// What a template can be rendered with.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    pub server_url: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// Why a template key cannot be rendered. Its text names the key and the fault, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credentialsSecret.template key {key:?}: {fault}")]
pub struct TemplateError {
    /// The Secret key whose template failed.
    pub key: String,
    /// What was wrong, with the line when minijinja knows it.
    pub fault: String,
}

fn environment(creds: &Credentials<'_>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    let (server, user, pass) = (creds.server_url.to_string(), creds.username.to_string(), creds.password.to_string());
    env.add_function("databaseURL", move |name: String| -> Result<String, minijinja::Error> {
        if !crate::api::validation::is_valid_database_name(&name) {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("databaseURL: {name:?} is not a CouchDB database name"),
            ));
        }
        connection_url(&server, &user, &pass, Some(&name)).ok_or_else(|| {
            minijinja::Error::new(ErrorKind::InvalidOperation, "databaseURL: the server URL cannot hold credentials")
        })
    });
    env
}

fn context(creds: &Credentials<'_>) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("username", creds.username.to_string()),
        ("password", creds.password.to_string()),
        ("usernameEncoded", utf8_percent_encode(creds.username, USERINFO).to_string()),
        ("passwordEncoded", utf8_percent_encode(creds.password, USERINFO).to_string()),
        ("url", creds.server_url.to_string()),
        (
            "urlWithCredentials",
            connection_url(creds.server_url, creds.username, creds.password, None).unwrap_or_default(),
        ),
    ])
}

/// minijinja's own description of an error, without the debug context (which lists values).
fn describe(e: &minijinja::Error) -> String {
    let what = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
    match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

/// Every key of `template` rendered with `creds`, or the first key that fails.
pub fn render(
    template: &BTreeMap<String, String>,
    creds: &Credentials<'_>,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let env = environment(creds);
    let ctx = context(creds);
    // minijinja's own functions (`range`, `dict`, ...) are globals, and so is `databaseURL`.
    let known: BTreeSet<String> =
        PLACEHOLDERS.into_iter().map(str::to_string).chain(env.globals().map(|(name, _)| name.to_string())).collect();
    // A filter's error may quote the value it was given: the password never leaves in one.
    let secrets: Vec<String> =
        [creds.password.to_string(), ctx["passwordEncoded"].clone()].into_iter().filter(|s| !s.is_empty()).collect();
    let scrub = |fault: String| secrets.iter().fold(fault, |f, s| f.replace(s.as_str(), "<password>"));
    let mut out = BTreeMap::new();
    for (key, source) in template {
        let fail = |fault: String| TemplateError { key: key.clone(), fault: scrub(fault) };
        if reserved_key(key) {
            return Err(fail("the operator writes this key itself; choose another name".into()));
        }
        let tmpl = env.template_from_str(source).map_err(|e| fail(describe(&e)))?;
        let unknown: BTreeSet<String> =
            tmpl.undeclared_variables(false).into_iter().filter(|v| !known.contains(v)).collect();
        if !unknown.is_empty() {
            let names: Vec<String> = unknown.into_iter().collect();
            return Err(fail(format!("unknown placeholder {} (known: {})", names.join(", "), PLACEHOLDERS.join(", "))));
        }
        let rendered = tmpl.render(&ctx).map_err(|e| fail(describe(&e)))?;
        if rendered.len() > MAX_RENDERED {
            return Err(fail(format!("renders to more than {MAX_RENDERED} bytes")));
        }
        out.insert(key.clone(), rendered);
    }
    Ok(out)
}

/// Checks `template` without real credentials (sample values of the same shape): what a spec
/// change alone can fix is refused before a password is read or a Secret written.
pub fn check(template: &BTreeMap<String, String>, server_url: &str) -> Result<(), TemplateError> {
    let creds = Credentials { server_url, username: "user", password: "sample-password" };
    render(template, &creds).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials<'static> {
        Credentials { server_url: "http://couch.example:5984", username: "ali ce", password: "p@ss:w/rd%" }
    }

    fn one(source: &str) -> Result<String, TemplateError> {
        let t = BTreeMap::from([("K".to_string(), source.to_string())]);
        render(&t, &creds()).map(|m| m["K"].clone())
    }

    #[test]
    fn placeholders_render_with_credentials_percent_encoded() {
        for (source, want) in [
            ("{{ urlWithCredentials }}", "http://ali%20ce:p%40ss%3Aw%2Frd%25@couch.example:5984/"),
            (
                "{{ databaseURL(\"drafft-project\") }}",
                "http://ali%20ce:p%40ss%3Aw%2Frd%25@couch.example:5984/drafft-project",
            ),
            ("{{ username }}:{{ password }}", "ali ce:p@ss:w/rd%"),
            ("{{ usernameEncoded }}:{{ passwordEncoded }}", "ali%20ce:p%40ss%3Aw%2Frd%25"),
            ("{{ url }}", "http://couch.example:5984"),
            ("COUCH={{ url | upper }}", "COUCH=HTTP://COUCH.EXAMPLE:5984"),
            ("{{ password | urlencode }}", "p%40ss%3Aw/rd%25"),
        ] {
            assert_eq!(one(source).as_deref(), Ok(want), "{source}");
        }
    }

    #[test]
    fn an_unknown_placeholder_is_named_and_no_value_is_in_the_error() {
        let err = one("{{ passwrd }}{{ URLWithCredentials }}").unwrap_err();
        assert_eq!(err.key, "K");
        assert!(err.fault.contains("unknown placeholder URLWithCredentials, passwrd"), "{err}");
        for (source, fault) in [
            ("{{ password | nosuchfilter }}", "nosuchfilter"),
            ("{{ databaseURL(\"Bad Name\") }}", "not a CouchDB database name"),
            ("{{ password ", "line 1"),
            ("{{ password | int }}", "K"),
            ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "fuel"),
        ] {
            let err = one(source).unwrap_err();
            assert!(err.to_string().contains(fault), "{source}: {err}");
            assert!(!err.to_string().contains("p@ss"), "{source}: {err}");
        }
    }

    #[test]
    fn reserved_keys_are_refused() {
        for key in ["username", "password", "url", "url-db"] {
            let t = BTreeMap::from([(key.to_string(), "x".to_string())]);
            assert!(render(&t, &creds()).is_err(), "{key}");
        }
        assert!(
            check(&BTreeMap::from([("COUCHDB_URL".into(), "{{ urlWithCredentials }}".into())]), "http://h").is_ok()
        );
    }
}
