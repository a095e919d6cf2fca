//! How values cross the entity boundary: MessagePack with field names
//! (`rmp_serde::to_vec_named`), so structs evolve compatibly — a field added
//! with `#[serde(default)]` reads old data, an unknown field is ignored.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::EntityError;

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Bytes, EntityError> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| EntityError::Encode {
            what: what.to_owned(),
            reason: e.to_string(),
        })
}

/// Decodes exactly one value: bytes left over after it are an error too, so
/// garbage that happens to start with a valid value is refused.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, EntityError> {
    let error = |reason: String| EntityError::Decode {
        what: what.to_owned(),
        reason,
    };
    let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let value = T::deserialize(&mut deserializer).map_err(|e| error(e.to_string()))?;
    let consumed = deserializer.into_inner().position();
    if consumed != bytes.len() as u64 {
        return Err(error(format!(
            "{} unexpected bytes after the value",
            bytes.len() as u64 - consumed
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    struct V1 {
        balance: i64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    struct V2 {
        balance: i64,
        #[serde(default)]
        frozen: bool,
    }

    #[test]
    fn added_default_fields_read_old_data_and_back() {
        let old = encode(&V1 { balance: 7 }, "state").unwrap();
        let new: V2 = decode(&old, "state").unwrap();
        assert_eq!(
            new,
            V2 {
                balance: 7,
                frozen: false
            }
        );
        // And a newer writer's data stays readable by the older struct.
        let newer = encode(
            &V2 {
                balance: 8,
                frozen: true,
            },
            "state",
        )
        .unwrap();
        assert_eq!(decode::<V1>(&newer, "state").unwrap(), V1 { balance: 8 });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<V2>(&bytes, "state");
            let _ = decode::<(String, Vec<u64>)>(&bytes, "params");
        }
        // A valid value followed by garbage is refused as a whole.
        let mut padded = encode(&7_i64, "p").unwrap().to_vec();
        padded.extend_from_slice(&[0xff; 8]);
        assert!(decode::<i64>(&padded, "params").is_err());
        let err = decode::<V2>(&[0xc1], "state").unwrap_err();
        assert!(err.to_string().contains("cannot decode state"), "{err}");
    }
}
