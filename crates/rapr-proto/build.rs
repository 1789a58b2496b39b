//! Compiles rapr's proto/ files with the protoc shipped by `protoc-bin-vendored`, so a clean clone
//! builds without a system protoc.
//!
//! Two sets: the served API (its file descriptor set feeds gRPC reflection) and the protocols
//! rapr only calls or serves privately (the app callback, the sidecar-to-sidecar protocol), kept
//! out of reflection and generated into their own folder.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // reason: tonic-prost-build reads PROTOC from the environment; build scripts run single-threaded.
    std::env::set_var("PROTOC", &protoc);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let includes = [root.clone(), include];
    let public = [
        "dapr/proto/common/v1/common.proto",
        "dapr/proto/runtime/v1/state.proto",
        "dapr/proto/runtime/v1/metadata.proto",
        "dapr/proto/runtime/v1/secret.proto",
        "dapr/proto/runtime/v1/invoke.proto",
        "dapr/proto/runtime/v1/appcallback.proto",
        "dapr/proto/runtime/v1/pubsub.proto",
        "dapr/proto/runtime/v1/dapr.proto",
    ];
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("rapr_descriptor.bin"))
        .compile_protos(&public.map(|f| root.join(f)), &includes)?;

    let private_out = out.join("private");
    std::fs::create_dir_all(&private_out)?;
    let private = ["rapr/private/appcallback.proto", "dapr/proto/internals/v1/service_invocation.proto", "dapr/proto/placement/v1/placement.proto"];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&private_out)
        // The call metadata maps as BTreeMaps: a handful of headers per call, which std's
        // HashMap hashed with SipHash (and seeded anew) on both sides of every hop.
        .btree_map(".dapr.proto.internals.v1")
        .extern_path(".dapr.proto.common.v1", "crate::common::v1")
        // The callback messages are generated once, in the served module.
        .extern_path(".dapr.proto.runtime.v1", "crate::runtime::v1")
        .compile_protos(&private.map(|f| root.join(f)), &includes)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
