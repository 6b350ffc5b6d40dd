//! Unit tests of `auth`.
