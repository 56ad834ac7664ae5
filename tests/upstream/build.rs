//! Compiles `proto/echo.proto` with the vendored `protoc` (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // The server side is written by hand (src/grpc/server.rs) to control trailers exactly.
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, &["proto/echo.proto"], &["proto"])?;
    Ok(())
}
