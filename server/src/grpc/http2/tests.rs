//! Tests of the native transport.
