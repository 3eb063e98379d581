//! The names of the labels and annotations the operator puts on the Kubernetes objects it
//! writes (Secrets of credentials) and reads back to know they are its own.

/// The standard label saying who manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on the objects the operator writes.
pub const MANAGED_BY: &str = "couchshare";
/// Which resource an object was written for, as `Kind/name` (for people; not trusted).
pub const OWNER_ANNOTATION: &str = "couchshare.io/owner";
/// The UID of the resource an object was written for: the operator changes or deletes only
/// objects whose annotation names the resource acting on them.
pub const OWNER_UID_ANNOTATION: &str = "couchshare.io/owner-uid";
/// On a credentials Secret: the rotation generation its generated password is for.
pub const ROTATION_ANNOTATION: &str = "couchshare.io/rotation-generation";
/// On a CouchBackup: the CouchScheduledBackup (same namespace) that created it.
pub const SCHEDULED_BACKUP_LABEL: &str = "couchshare.io/scheduled-backup";
