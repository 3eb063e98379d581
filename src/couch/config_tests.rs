//! Tests of the client configuration: base URLs, redaction, CA bundles.

use super::*;
use crate::couch::CouchClient;

#[test]
fn base_urls_must_be_http_and_free_of_credentials() {
    assert!(parse_base_url("http://127.0.0.1:5984").is_ok());
    assert!(parse_base_url("https://couch.example/prefix/").is_ok());
    assert!(parse_base_url("ftp://couch.example").is_err());
    let err = parse_base_url("http://admin:s3cret@couch.example").expect_err("credentials in the URL are refused");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn debug_output_redacts_passwords() {
    let creds = Credentials::new("admin", "hunter2-secret");
    let config = CouchConfig::new("http://h:1", Some(creds.clone()));
    assert!(!format!("{config:?}").contains("hunter2"));
    let client = CouchClient::new(config).expect("client");
    let shown = format!("{client:?} {creds:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("admin"));
}

/// A self-signed P-256 CA made with openssl for this test (no key kept).
const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUbyDbkBsU7EvSGQDM0KrY8h30NegwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSY291Y2hzaGFyZSB0ZXN0IENBMCAXDTI2MTEyMzE1NDc1M1oY
DzIxMjYxMDMwMTU0NzUzWjAdMRswGQYDVQQDDBJjb3VjaHNoYXJlIHRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQl81yV+1ZBY7REsEoquMGaOWp043Mf
Y3hUvlNZvVjstY1x9ZFilRG7SJ0GD8xjYsQegJrdL4jvrRnsdLE10I0Vo1MwUTAd
BgNVHQ4EFgQURPpfDSAErL3BU+egoH6m2szF/AwwHwYDVR0jBBgwFoAURPpfDSAE
rL3BU+egoH6m2szF/AwwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF
AiEArbfQp4XYz1aJScOxs/eXP0QsJjEpAIP/FJsdnUakr60CIHHNgEoFObZKZyBw
PWlCkiYllzfM+H/G83Vqpni71AJw
-----END CERTIFICATE-----
";

#[test]
fn a_custom_ca_is_trusted_on_top_of_the_web_roots() {
    tls_config(Some(TEST_CA_PEM.as_bytes())).expect("a valid CA");
    let mut config = CouchConfig::new("https://couch.example", None);
    config.ca_pem = Some(TEST_CA_PEM.as_bytes().to_vec());
    assert!(CouchClient::new(config).is_ok());
}

#[test]
fn a_ca_pem_without_certificates_is_refused() {
    let mut config = CouchConfig::new("https://h:1", None);
    config.ca_pem = Some(b"not a pem".to_vec());
    assert!(matches!(CouchClient::new(config), Err(CouchError::InvalidConfig(_))));
    let err = ca_certificates(b"not a pem").expect_err("no certificate");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
}

#[test]
fn a_ca_bundle_gives_every_certificate_and_a_broken_one_is_refused() {
    let bundle = format!("{TEST_CA_PEM}some text between\n{TEST_CA_PEM}");
    assert_eq!(ca_certificates(bundle.as_bytes()).expect("a bundle").len(), 2);
    tls_config(Some(bundle.as_bytes())).expect("a bundle is trusted");
    let broken = "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n";
    let err = ca_certificates(broken.as_bytes()).expect_err("a broken section");
    assert!(err.to_string().contains("CA certificate PEM"), "{err}");
    let unterminated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    assert!(ca_certificates(unterminated.as_bytes()).is_err());
}
