//! Compiles `proto/runtimed/v1/runtimed.proto` with protox (pure Rust, no system
//! `protoc`) and generates the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "proto";
    let file = "proto/runtimed/v1/runtimed.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], [proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
