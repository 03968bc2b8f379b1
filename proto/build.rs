//! Compiles `mc/v1/*.proto` with protox (no system protoc) and writes the descriptor set
//! that the control plane serves through gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "mc/v1/types.proto",
        "mc/v1/ticket_service.proto",
        "mc/v1/project_service.proto",
        "mc/v1/worker_service.proto",
        "mc/v1/brain_service.proto",
        "mc/v1/admin_service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("mc_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::SmallCodec")
        .compile_fds(fds)?;
    Ok(())
}
