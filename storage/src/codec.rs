//! The one key codec. A key is a tuple of parts: strings are written as their UTF-8 bytes
//! followed by 0xFF (a byte UTF-8 never contains, so a string key is never a prefix of a
//! longer one), integers as 8 big-endian bytes so that byte order is numeric order.
//! Encoding a leading sub-tuple gives a prefix for scans.

use crate::{Error, Result};

const STRING_END: u8 = 0xFF;

/// A value that can be (part of) a key.
pub trait KeyCodec: Sized {
    fn encode_into(&self, out: &mut Vec<u8>);
    fn decode_from(input: &mut &[u8]) -> Result<Self>;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        self.encode_into(&mut out);
        out
    }

    /// Decodes a whole key; trailing bytes are an error.
    fn decode(mut input: &[u8]) -> Result<Self> {
        let value = Self::decode_from(&mut input)?;
        if input.is_empty() {
            Ok(value)
        } else {
            Err(Error::Key(format!("{} trailing bytes", input.len())))
        }
    }
}

/// The smallest key after every key that starts with `prefix` (the end of a range that
/// holds exactly them): `prefix` without its trailing 0xFF bytes, last byte raised by one.
/// `None` when nothing is left to raise (an empty prefix, or the empty string's).
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KeyCodec for String {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self.as_str().encode_into(out)
    }

    fn decode_from(input: &mut &[u8]) -> Result<Self> {
        let end = input
            .iter()
            .position(|&b| b == STRING_END)
            .ok_or_else(|| Error::Key("unterminated string".into()))?;
        let s = std::str::from_utf8(&input[..end]).map_err(|e| Error::Key(e.to_string()))?;
        *input = &input[end + 1..];
        Ok(s.to_owned())
    }
}

impl KeyCodec for &str {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
        out.push(STRING_END);
    }

    fn decode_from(_input: &mut &[u8]) -> Result<Self> {
        Err(Error::Key(
            "borrowed strings cannot be decoded; use String".into(),
        ))
    }
}

impl KeyCodec for u64 {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn decode_from(input: &mut &[u8]) -> Result<Self> {
        let (head, rest) = input
            .split_first_chunk::<8>()
            .ok_or_else(|| Error::Key("short integer".into()))?;
        *input = rest;
        Ok(u64::from_be_bytes(*head))
    }
}

/// The empty tuple: a prefix matching every key.
impl KeyCodec for () {
    fn encode_into(&self, _out: &mut Vec<u8>) {}

    fn decode_from(_input: &mut &[u8]) -> Result<Self> {
        Ok(())
    }
}

macro_rules! tuple_codec {
    ($($name:ident),+) => {
        impl<$($name: KeyCodec),+> KeyCodec for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_into(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_into(out);)+
            }

            fn decode_from(input: &mut &[u8]) -> Result<Self> {
                Ok(($($name::decode_from(input)?,)+))
            }
        }
    };
}

tuple_codec!(A);
tuple_codec!(A, B);
tuple_codec!(A, B, C);
tuple_codec!(A, B, C, D);
tuple_codec!(A, B, C, D, E);

#[cfg(test)]
mod tests {
    use super::KeyCodec;

    #[test]
    fn round_trips_tuples() {
        let key = ("@a:x".to_owned(), "DEV".to_owned(), 7u64);
        assert_eq!(<(String, String, u64)>::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn integers_sort_numerically() {
        assert!(255u64.encode() < 256u64.encode());
        assert!(("a", 2u64).encode() < ("a", 10u64).encode());
    }

    #[test]
    fn a_string_is_not_a_prefix_of_a_longer_one() {
        let short = ("@a:x",).encode();
        let long = ("@ab:x", "D").encode();
        assert!(!long.starts_with(&short));
        assert!(("@a:x", "D").encode().starts_with(&short));
    }

    #[test]
    fn rejects_garbage() {
        assert!(String::decode(b"no terminator").is_err());
        assert!(u64::decode(&[1, 2, 3]).is_err());
        assert!(u64::decode(&[0; 9]).is_err());
    }
}
