//! Fuzz target for the frame decoder, the first code that touches bytes
//! from the network.
//!
//! Run (stable toolchain): `RUSTC_BOOTSTRAP=1 cargo fuzz run frame_decode -- -max_total_time=60`
//! from `transport/`.
//!
//! Properties checked on arbitrary input:
//! * decoding never panics and never consumes more than it was given;
//! * a length above the limit is an error, whatever follows;
//! * feeding the same bytes in two pieces gives the same frames as at once;
//! * every decoded envelope re-encodes and decodes to itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_transport::frame::{FRAME_PREFIX_BYTES, decode_frame, encode_frame};
use shoal_transport::proto::Envelope;

/// Decodes frames until the buffer runs dry or an error; returns them and
/// whether decoding stopped on an error.
fn decode_all(buf: &mut BytesMut, max: usize) -> (Vec<Envelope>, bool) {
    let mut frames = Vec::new();
    loop {
        let before = buf.len();
        match decode_frame(buf, max) {
            Ok(Some(envelope)) => {
                assert!(buf.len() < before, "a frame must consume bytes");
                frames.push(envelope);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame consumes nothing");
                return (frames, false);
            }
            Err(_) => return (frames, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First two bytes pick the limit (so small limits get exercised too),
    // the third where to split the input; the rest is the stream.
    let [a, b, split, stream @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([*a, *b])) * 16;

    let mut whole = BytesMut::from(stream);
    let (frames, failed) = decode_all(&mut whole, max);

    // Same bytes, delivered in two pieces.
    let cut = usize::from(*split).min(stream.len());
    let mut pieces = BytesMut::from(&stream[..cut]);
    let (mut frames_in_pieces, failed_early) = decode_all(&mut pieces, max);
    if !failed_early {
        pieces.extend_from_slice(&stream[cut..]);
        let (rest, failed_late) = decode_all(&mut pieces, max);
        frames_in_pieces.extend(rest);
        assert_eq!(failed, failed_late);
    } else {
        assert!(failed);
    }
    if !failed {
        assert_eq!(frames, frames_in_pieces);
    }

    // An oversize prefix is refused without looking at the body.
    if let Some(prefix) = stream.get(..FRAME_PREFIX_BYTES) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > max {
            assert!(frames.is_empty() && failed);
        }
    }

    for envelope in frames {
        let frame = encode_frame(&envelope, usize::MAX).expect("re-encoding a decoded frame");
        let mut buf = BytesMut::from(&frame[..]);
        let again = decode_frame(&mut buf, usize::MAX).expect("decoding a re-encoded frame");
        assert_eq!(again, Some(envelope));
        assert!(buf.is_empty());
    }
});
