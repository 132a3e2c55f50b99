//! The gRPC codec of every runway service: prost, with small first buffers.
//!
//! tonic's default codec gives every stream an 8 KiB encode buffer and an
//! 8 KiB decode buffer up front. A coordinator holds one long-lived stream
//! per attached agent, whose messages are mostly heartbeats of a few
//! bytes: with ten thousand agents that is 160 MiB of buffers that are
//! almost always empty. Here they start at [`FIRST_BUFFER`] and grow when
//! a larger message (a bundle) passes.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Bytes each stream's encode and decode buffer start with.
pub const FIRST_BUFFER: usize = 1024;

/// Encoded bytes after which a stream hands a chunk to the transport
/// (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`FIRST_BUFFER`]-sized first buffers; the generated
/// services use it (see `build.rs`).
#[derive(Debug, Clone)]
pub struct RunwayCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RunwayCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER, YIELD_THRESHOLD)
}

impl<T, U> Codec for RunwayCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
