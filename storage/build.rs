//! Compiles `proto/shoal/storage/v1/storage.proto` with protox (a pure-Rust
//! protobuf compiler: no `protoc` is needed) and prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("proto");
    let proto_file = proto_root.join("shoal/storage/v1/storage.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let descriptors = protox::compile([&proto_file], [&proto_root])?;
    prost_build::Config::new()
        // Payload fields decode as `bytes::Bytes`: zero-copy slices of the input.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
