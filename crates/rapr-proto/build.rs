//! Compiles rapr's proto/ files with the protoc shipped by `protoc-bin-vendored`, so a clean clone
//! builds without a system protoc. Also emits the file descriptor set that gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // reason: tonic-prost-build reads PROTOC from the environment; build scripts run single-threaded.
    std::env::set_var("PROTOC", &protoc);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "dapr/proto/common/v1/common.proto",
        "dapr/proto/runtime/v1/state.proto",
        "dapr/proto/runtime/v1/metadata.proto",
        "dapr/proto/runtime/v1/secret.proto",
        "dapr/proto/runtime/v1/dapr.proto",
    ];
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("rapr_descriptor.bin"))
        .compile_protos(
            &files.map(|f| root.join(f)),
            &[root.clone(), include.clone()],
        )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
