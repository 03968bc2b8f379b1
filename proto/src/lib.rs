//! The gRPC contract of Mission Control (`mc.v1`): generated messages, clients and servers,
//! plus the encoded file descriptor set for reflection.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("mc.v1");
}

/// Encoded `FileDescriptorSet` of every `mc.v1` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mc_descriptor.bin"));

pub use prost_types;
pub use v1::*;

pub mod codec;
pub mod contract;
