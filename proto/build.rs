fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/runway/v1/runway.proto");
    // Small first buffers per stream: see src/codec.rs.
    tonic_prost_build::configure()
        .codec_path("crate::codec::RunwayCodec")
        // Results travel through enums and channels by value; a plan of a
        // few hundred bytes inline would make every result that size.
        .boxed(".runway.v1.CommandResult.plan")
        .compile_protos(&["proto/runway/v1/runway.proto"], &["proto"])?;
    Ok(())
}
