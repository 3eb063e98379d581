//! Pure functions from specs and observed CouchDB state to steps. No I/O.
