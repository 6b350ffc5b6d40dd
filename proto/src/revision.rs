//! [`Epoch`] and [`Revision`]: together they name one exact state of one server process.
//!
//! A revision counts published batches: [`Revision::ZERO`] is the empty store before the first
//! batch, and each batch with real changes gets the next one. The epoch is 128 random bits a
//! server draws at process start, so `(epoch, revision)` never names two different states. On
//! the wire a revision is a `uint64` and an epoch 16 bytes; in logs, a number and 32 lowercase
//! hex digits.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::{Error, Result};

/// The length of an epoch on the wire, in bytes.
pub const EPOCH_LEN: usize = 16;

/// The number of a published batch. Revisions of one epoch are consecutive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// The empty store, before any batch was published.
    pub const ZERO: Self = Self(0);

    /// The revision after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The number, as on the wire.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Revision {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl From<Revision> for u64 {
    fn from(revision: Revision) -> Self {
        revision.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The 128-bit id a server process draws at start; `(epoch, revision)` names one exact state.
///
/// A `u128` converts big-endian, so `Epoch::from(1)` is fifteen zero bytes and a one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch([u8; EPOCH_LEN]);

impl Epoch {
    /// An epoch from its 16 bytes.
    #[must_use]
    pub const fn from_array(bytes: [u8; EPOCH_LEN]) -> Self {
        Epoch(bytes)
    }

    /// An epoch from a wire field.
    ///
    /// # Errors
    /// [`Error::InvalidEpoch`] unless `bytes` is exactly 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        <[u8; EPOCH_LEN]>::try_from(bytes)
            .map(Epoch)
            .map_err(|_| Error::InvalidEpoch(bytes.len()))
    }

    /// The 16 bytes.
    #[must_use]
    pub const fn as_array(&self) -> &[u8; EPOCH_LEN] {
        &self.0
    }

    /// The epoch as a wire field.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0)
    }
}

impl From<u128> for Epoch {
    fn from(value: u128) -> Self {
        Epoch(value.to_be_bytes())
    }
}

impl From<Epoch> for u128 {
    fn from(epoch: Epoch) -> Self {
        u128::from_be_bytes(epoch.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", u128::from(*self))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

impl FromStr for Epoch {
    type Err = Error;

    /// Parses the 32 hex digits an epoch prints as.
    fn from_str(s: &str) -> Result<Self> {
        if s.len() != 2 * EPOCH_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidEpochText(s.to_owned()));
        }
        u128::from_str_radix(s, 16)
            .map(Epoch::from)
            .map_err(|_| Error::InvalidEpochText(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip_through_the_wire_text_and_u128() {
        let epoch = Epoch::from(0x0123_4567_89ab_cdef_0011_2233_4455_6677u128);
        assert_eq!(epoch.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(epoch.as_array()[0], 0x01);
        assert_eq!(Epoch::from_slice(&epoch.to_bytes()).unwrap(), epoch);
        assert_eq!(epoch.to_string().parse::<Epoch>().unwrap(), epoch);
        assert_eq!(Epoch::from(1u128).to_string(), format!("{:032}", 1));
        assert_eq!(u128::from(Epoch::from_array([0xff; 16])), u128::MAX);
        assert_eq!(
            format!("{:?}", Epoch::from_array([0xab; 16])),
            format!("Epoch({})", "ab".repeat(16))
        );
    }

    #[test]
    fn epochs_must_be_sixteen_bytes_or_thirty_two_hex_digits() {
        assert!(matches!(
            Epoch::from_slice(&[]),
            Err(Error::InvalidEpoch(0))
        ));
        assert!(matches!(
            Epoch::from_slice(&[0; 17]),
            Err(Error::InvalidEpoch(17))
        ));
        for text in ["", "ab", &"g".repeat(32), &"a".repeat(33), &"+1".repeat(16)] {
            assert!(
                matches!(text.parse::<Epoch>(), Err(Error::InvalidEpochText(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn revisions_count_up_from_zero() {
        assert_eq!(Revision::ZERO.next(), Revision(1));
        assert_eq!(Revision::from(41).next().get(), 42);
        assert_eq!(Revision(7).to_string(), "7");
        assert_eq!(u64::from(Revision(9)), 9);
    }
}
