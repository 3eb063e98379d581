//! The CRD types of `couchshare.io/v1alpha1`.
