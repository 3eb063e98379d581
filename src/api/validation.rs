//! Validation that mirrors the CRDs' admission rules, for code paths that never pass
//! through the API server (the `plan` command, names derived at run time).

/// CouchDB's maximum database name length.
pub const MAX_DATABASE_NAME: usize = 238;

/// Whether `name` is a valid CouchDB database name (`^[a-z][a-z0-9_$()+/-]*$`, ≤ 238).
pub fn is_valid_database_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_DATABASE_NAME
        && first.is_ascii_lowercase()
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_$()+-/".contains(c))
}

/// Whether `name` is acceptable as a CouchDB username: non-empty, no leading `_`, no `:`.
pub fn is_valid_username(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('_') && !name.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_follow_couchdbs_rule() {
        for ok in ["a", "drafft_v2_quantum_empanada", "userdb-616c", "a$()+-/_9", "tenant/_replicator"] {
            assert!(is_valid_database_name(ok), "{ok} should be valid");
        }
        let long = "a".repeat(239);
        for bad in ["", "UserData", "user data", "user@data", "_users", "9bad", "a.b", long.as_str()] {
            assert!(!is_valid_database_name(bad), "{bad} should be invalid");
        }
        assert!(is_valid_database_name(&"a".repeat(238)));
    }

    #[test]
    fn usernames_reject_reserved_prefix_and_colon() {
        assert!(is_valid_username("alice"));
        assert!(is_valid_username("drafft_sync_user_01"));
        assert!(!is_valid_username(""));
        assert!(!is_valid_username("_admin"));
        assert!(!is_valid_username("a:b"));
    }
}
