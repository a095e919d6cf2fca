//! Compiles `proto/**/*.proto` into Rust with protox (a pure-Rust protobuf
//! compiler, so no `protoc` is needed) and prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("proto");
    let files = [proto_root.join("shoal/transport/v1/envelope.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_root])?;
    prost_build::Config::new()
        // Payloads decode as slices of the received frame: no copy.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
