//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and
//! tonic-prost-build, and writes the descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/sidecar/v1/sidecar.proto";
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate!() embeds migrations/sqlite and migrations/postgres at compile time.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sidecar_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors.clone())?;
    // The server's view of the API, in which a streamed `CallEvent` is bytes
    // encoded once per event and shared by every subscriber.
    let wire = out.join("wire");
    std::fs::create_dir_all(&wire)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&wire)
        .extern_path(
            ".sidecar.v1.CallEvent",
            "crate::grpc::wire::EncodedCallEvent",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
